"""Teacher-forced passes of a causal LM that skip work the answer does not need: the training loss and answer scoring.

Both give the same numbers as the plain padded forward, to float rounding (tests/test_forward.py):
- training: the **prompt prefix** every example shares (the task's system prompt, about two thirds of a
  classification example's tokens) is computed once per batch: the batch becomes one packed row, the prefix followed
  by each example's remainder, with an attention mask that lets each remainder see the prefix and itself only; and
  **the vocabulary head and the loss run at target positions only** (a 49k-word head at every prompt position is a
  fifth of the model's FLOPs, while targets are a few tokens);
- scoring: a known set of answers (labels, letters) gets the log-probability of each of their tokens after the
  prompt: prompts and their candidate answers are packed the same way (prefix → prompt → each candidate), so the
  prefix runs once per packed row, each prompt once, and the head only where a candidate token is predicted. The
  answer picked is the one greedy decoding would write, were it kept to the candidates (`greedy_choice`).
"""

from __future__ import annotations

import functools
from typing import Any

IGNORE_INDEX = -100  # label id the loss skips (prompt and padding tokens)
PACKABLE = ("sdpa", "eager")  # attention implementations that take an arbitrary 4-D mask
# Packed rows up to this many tokens train with eager attention where the student computes in bf16/fp16 on a CPU:
# there SDPA's flash kernel has a slow backward (a 175-token row, SmolLM2's 9 heads: 5.5 ms a layer forward and back
# against 2.2 ms eager; level near 400 tokens, and 2x slower eager at 1,024, AMX Xeon), while eager keeps each
# head's length² scores for the backward, memory that grows with the square of the row. In fp32 the flash kernel
# is as fast as eager at every length, so it stays.
SHORT_ROW = 384


def common_prefix_length(sequences: list[list[int]], limits: list[int]) -> int:
    """Tokens every sequence starts with, at most limits[i] - 1 for each (every row keeps a token of its own)."""
    if not sequences:
        return 0
    first, length = sequences[0], min(limits) - 1
    for sequence in sequences[1:]:
        same = 0
        while same < length and sequence[same] == first[same]:
            same += 1
        length = same
    return max(length, 0)


def pack(segments: list[tuple[list[int], int | None]]) -> tuple[Any, Any, Any, list[int]]:
    """One row from a tree of token segments: segments[k] = (tokens, index of the segment it continues, or None).

    A segment sees its own earlier tokens and those of the segments it continues (its parent, the parent's parent…),
    never a sibling's; its positions continue its parent's. Parents come before their children. Returns input_ids
    (1 × L), position_ids (1 × L), the boolean attention mask (1 × 1 × L × L) and where each segment starts."""
    import torch

    ids, owner, positions, starts, ends = [], [], [], [], []
    ancestors = torch.eye(len(segments), dtype=torch.bool)
    for k, (tokens, parent) in enumerate(segments):
        first = 0 if parent is None else ends[parent]
        if parent is not None:
            ancestors[k] |= ancestors[parent]
        starts.append(len(ids))
        ends.append(first + len(tokens))
        ids += tokens
        owner += [k] * len(tokens)
        positions += range(first, first + len(tokens))
    owner_t = torch.tensor(owner)
    visible = torch.ones(len(ids), len(ids), dtype=torch.bool).tril() & ancestors[owner_t][:, owner_t]
    return torch.tensor([ids]), torch.tensor([positions]), visible[None, None], starts


def collate_rows(rows: list[tuple[list[int], list[int]]], prefix: int, pad_id: int, pack_rows: bool) -> dict[str, Any]:
    """A training batch of (input_ids, labels) rows that all start with the same `prefix` tokens: right-padded rows,
    or (pack_rows) one packed row holding the prefix once and then every example's remainder, each computed exactly
    as on its own."""
    import torch

    if not pack_rows:
        width = max(len(ids) for ids, _ in rows)
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for row, (ids, target) in enumerate(rows):
            input_ids[row, : len(ids)], labels[row, : len(ids)], attention[row, : len(ids)] = torch.tensor(ids), torch.tensor(target), 1
        return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
    input_ids, position_ids, visible, _ = pack([(rows[0][0][:prefix], None)] + [(ids[prefix:], 0) for ids, _ in rows])
    # A remainder starts with a prompt token (the prefix stops short of every target), so no loss crosses a boundary.
    labels = [IGNORE_INDEX] * prefix + [label for _, row_labels in rows for label in row_labels[prefix:]]
    return {"input_ids": input_ids, "attention_mask": visible, "labels": torch.tensor([labels]), "position_ids": position_ids}


def worth_packing(lengths: list[int], prefix: int, hidden_size: int, layers: int, parameters: int) -> bool:
    """Whether one packed row costs fewer FLOPs than padded rows: the prefix is computed once, but attention spans
    the whole packed row (linear layers ~2·N per token, attention ~4·hidden·layers per query-key pair)."""
    packed = prefix + sum(length - prefix for length in lengths)
    width = max(lengths)
    packed_cost = packed * 2 * parameters + packed * packed * 4 * hidden_size * layers
    padded_cost = len(lengths) * (width * 2 * parameters + width * width * 4 * hidden_size * layers)
    return packed_cost < padded_cost


def _logits_at(model, input_ids, attention_mask, keep, position_ids=None):
    """Logits at the True positions of `keep` (like input_ids), (n × vocab); the head runs at those positions only."""
    import torch

    inner = getattr(model, "module", model)  # under DDP or FSDP the model is wrapped: its config is inside
    if attention_mask.dim() == 4 and inner.config._attn_implementation == "eager":  # eager adds the mask to the scores
        attention_mask = torch.zeros(attention_mask.shape, dtype=inner.dtype, device=attention_mask.device).masked_fill(
            ~attention_mask, torch.finfo(inner.dtype).min)
    # Older transformers keep positions shared by every row: the union of the rows' kept positions, then each row's own.
    kept = keep if boolean_logits_to_keep() else keep.any(0).nonzero().squeeze(1)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, logits_to_keep=kept).logits
    if logits.dim() == 2:  # a boolean logits_to_keep honoured: just those positions
        return logits
    return logits[keep] if kept is keep else logits[keep[:, kept]]


@functools.cache
def boolean_logits_to_keep() -> bool:
    """Whether this transformers slices the hidden states with a boolean (batch × length) `logits_to_keep`
    (`slice_logits_to_keep`: transformers 5.23 has it, 5.17 not). Earlier versions index the length axis with it,
    which raises IndexError for a 2-D mask (seen with transformers 5.17 on a GPU machine)."""
    from transformers import modeling_utils

    return hasattr(modeling_utils, "slice_logits_to_keep")


def causal_lm_loss(model, input_ids, attention_mask, labels, position_ids=None, num_items_in_batch=None):
    """Mean next-token cross-entropy over the target tokens (labels != IGNORE_INDEX); with num_items_in_batch, their
    sum divided by it (as transformers' loss takes it: a process's share of a batch split between processes). Equals
    the plain `model(..., labels=...).loss` of the same rows."""
    import torch

    targets = labels[:, 1:]
    keep = torch.cat([targets != IGNORE_INDEX, targets.new_zeros(targets.shape[0], 1, dtype=torch.bool)], dim=1)
    logits = _logits_at(model, input_ids, attention_mask, keep, position_ids)
    if num_items_in_batch is None:
        return torch.nn.functional.cross_entropy(logits.float(), targets[keep[:, :-1]])
    return torch.nn.functional.cross_entropy(logits.float(), targets[keep[:, :-1]], reduction="sum") / num_items_in_batch


def candidate_logprobs(model, prompts: list[list[int]], candidates: list[list[list[int]]], prefix: int = 0,
                       row_tokens: int = 1024) -> list[list[list[float]]]:
    """Log-probability of each token of each candidate after its prompt (candidates[i] are token lists scored after
    prompts[i]; every prompt starts with the same `prefix` tokens). Prompts and candidates are packed into rows of
    about `row_tokens` tokens. Call under torch.inference_mode()."""
    import torch

    device = next(model.parameters()).device
    packable = model.config._attn_implementation in PACKABLE
    scores: list[list[list[float]]] = []
    start = 0
    while start < len(prompts):
        # One row: the prefix, then prompts (each followed by its candidates' tokens but the last) until the budget.
        segments: list[tuple[list[int], int | None]] = [(prompts[start][:prefix], None)] if prefix else []
        owners, end, size = [], start, prefix
        while end < len(prompts) and (end == start or (packable and size + len(prompts[end]) - prefix + sum(map(len, candidates[end])) <= row_tokens)):
            segments.append((prompts[end][prefix:], 0 if prefix else None))
            owners.append(len(segments) - 1)
            segments += [(tokens[:-1], owners[-1]) for tokens in candidates[end] if len(tokens) > 1]
            size += len(prompts[end]) - prefix + sum(map(len, candidates[end]))
            end += 1
        input_ids, position_ids, visible, starts = pack(segments)
        # Where each predicted token is read: a prompt's last position gives every candidate's first token,
        # each candidate position its next token.
        reads: list[list[tuple[int, list[int]]]] = []
        k = 1 if prefix else 0
        for i, owner in zip(range(start, end), owners):
            prompt_end = starts[owner] + len(prompts[i]) - prefix - 1
            k = owner + 1
            row = []
            for tokens in candidates[i]:
                places = [prompt_end]
                if len(tokens) > 1:
                    places += range(starts[k], starts[k] + len(tokens) - 1)
                    k += 1
                row.append((places, tokens))
            reads.append(row)
        keep = torch.zeros_like(input_ids, dtype=torch.bool)
        keep[0, sorted({p for row in reads for places, _ in row for p in places})] = True
        index = {p: j for j, p in enumerate(keep[0].nonzero()[:, 0].tolist())}
        logprobs = _logits_at(model, input_ids.to(device), visible.to(device), keep.to(device), position_ids.to(device)).float().log_softmax(-1)
        for row in reads:
            scores.append([[logprobs[index[p], t].item() for p, t in zip(places, tokens)] for places, tokens in row])
        start = end
    return scores


def greedy_choice(candidates: list[list[int]], logprobs: list[list[float]]) -> int:
    """The candidate greedy decoding writes when kept to the candidates: walk their token tree from the root, at each
    branch taking the child token with the highest log-probability (candidates that share the tokens so far share
    the distribution over the next one). Where unconstrained greedy decoding writes a candidate, it is this one;
    the highest total log-probability can differ (a likely first token followed by less likely ones)."""
    alive, depth = list(range(len(candidates))), 0
    while len(alive) > 1 and depth < max(len(candidates[i]) for i in alive):
        reach = [i for i in alive if depth < len(candidates[i])]
        best = max(reach, key=lambda i: logprobs[i][depth])
        alive = [i for i in reach if candidates[i][depth] == candidates[best][depth]]
        depth += 1
    return alive[0]
