"""The fast teacher-forced passes (students/forward.py) give the numbers of the plain padded forward: the packed
shared-prefix training loss and its gradients, and candidate scoring against hand-computed log-probabilities."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")

from llm2llm.students import forward, hf  # noqa: E402
from llm2llm.students.forward import (  # noqa: E402
    IGNORE_INDEX, candidate_logprobs, causal_lm_loss, collate_rows, common_prefix_length, greedy_choice, pack,
)

VOCAB = 50


@pytest.fixture(scope="module", params=["sdpa", "eager"])
def model(request):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True,
                         attn_implementation=request.param)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(params=["mask", "positions"])
def keep_by(request, monkeypatch):
    """Both ways the head is kept to the needed positions: a boolean mask (newer transformers) or the positions
    every row shares, then each row's own (older ones, where a boolean mask raises IndexError). Returns a check
    that the forwards asked which way to go (and so went this one)."""
    mask = request.param == "mask"
    if mask and not forward.boolean_logits_to_keep():
        pytest.skip("this transformers takes no boolean logits_to_keep (the positions case covers it)")
    asked = []
    monkeypatch.setattr(forward, "boolean_logits_to_keep", lambda: asked.append(1) is None and mask)
    return lambda: bool(asked)


def _rows():
    """Four examples sharing a 6-token prefix, prompts and targets of different lengths (targets at the end)."""
    prefix = [3, 9, 4, 12, 7, 5]
    rows = []
    for prompt, target in (([11, 13], [21, 22, 2]), ([14, 15, 16, 17], [23, 2]), ([18], [24, 25, 26, 2]), ([19, 20, 30], [27, 2])):
        ids = prefix + prompt + target
        rows.append((ids, [IGNORE_INDEX] * (len(ids) - len(target)) + target))
    return rows, len(prefix)


def test_common_prefix_stops_short_of_every_limit():
    assert common_prefix_length([[1, 2, 3, 4], [1, 2, 3, 9], [1, 2, 5]], [4, 4, 3]) == 2
    assert common_prefix_length([[1, 2, 3], [1, 2, 3]], [3, 2]) == 1  # each row keeps a token of its own
    assert common_prefix_length([[1, 2], [7, 2]], [2, 2]) == 0


def test_pack_mask_lets_a_segment_see_its_ancestors_only():
    input_ids, positions, visible, starts = pack([([1, 2], None), ([3, 4], 0), ([5], 0), ([6], 1)])
    assert input_ids.tolist() == [[1, 2, 3, 4, 5, 6]]
    assert positions.tolist() == [[0, 1, 2, 3, 2, 4]]  # siblings restart after the parent; a child continues it
    assert starts == [0, 2, 4, 5]
    assert visible[0, 0, 4].tolist() == [True, True, False, False, True, False]  # sees the prefix, not its sibling
    assert visible[0, 0, 5].tolist() == [True, True, True, True, False, True]  # sees its parent and the prefix


def test_packed_loss_and_gradients_equal_the_padded_batch(model, keep_by):
    rows, prefix = _rows()
    padded = collate_rows(rows, prefix, pad_id=0, pack_rows=False)
    packed = collate_rows(rows, prefix, pad_id=0, pack_rows=True)
    assert packed["input_ids"].shape[1] == prefix + sum(len(ids) - prefix for ids, _ in rows)

    def loss_and_grads(batch, plain):
        model.zero_grad()
        loss = model(**batch).loss if plain else causal_lm_loss(model, **batch)
        loss.backward()
        return loss.item(), [p.grad.clone() for p in model.parameters()]

    reference, reference_grads = loss_and_grads(padded, plain=True)
    for batch in (padded, packed):
        loss, grads = loss_and_grads(batch, plain=False)
        assert loss == pytest.approx(reference, abs=1e-4)
        for grad, expected in zip(grads, reference_grads):
            torch.testing.assert_close(grad, expected, atol=1e-4, rtol=1e-3)
    assert keep_by()


def test_the_clip_folded_into_the_step_updates_as_clipping_then_stepping(model):
    """hf._clip_in_step leaves the clip's multiply to fused AdamW's grad_scale: the same weights after a few steps as
    clip_grad_norm_ then the step, and not those of an unclipped run (the gradients are well over the norm)."""
    rows, prefix = _rows()
    batch = collate_rows(rows, prefix, pad_id=0, pack_rows=True)
    weights = {}
    for clip in ("own pass", "folded", "none"):
        student = copy.deepcopy(model).train()
        params = list(student.parameters())
        optimizer = torch.optim.AdamW(params, lr=1e-2, fused=True)
        for _ in range(3):
            (100 * causal_lm_loss(student, **batch)).backward()
            assert torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])) > 10
            if clip == "own pass":
                torch.nn.utils.clip_grad_norm_(params, 1.0)
            elif clip == "folded":
                hf._clip_in_step(optimizer, params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        weights[clip] = torch.cat([p.detach().flatten() for p in params])
    torch.testing.assert_close(weights["folded"], weights["own pass"], atol=1e-6, rtol=1e-5)
    assert (weights["none"] - weights["own pass"]).abs().max() > 1e-4


def test_packed_loss_equals_each_example_on_its_own(model):
    """Per example: a packed batch of one equals the plain forward of that example alone (no leak between rows)."""
    rows, prefix = _rows()
    for ids, labels in rows:
        alone = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss.item()
        assert causal_lm_loss(model, **collate_rows([(ids, labels)], prefix, 0, pack_rows=True)).item() == pytest.approx(alone, abs=1e-4)


def _by_hand(model, prompt, tokens):
    """log p(token_j | prompt, tokens_<j) for each j, from one plain forward of prompt + tokens."""
    with torch.no_grad():
        logprobs = model(input_ids=torch.tensor([prompt + tokens])).logits[0].log_softmax(-1)
    return [logprobs[len(prompt) - 1 + j, token].item() for j, token in enumerate(tokens)]


def test_candidate_logprobs_match_hand_computed_ones(model, keep_by):
    prefix = [3, 9, 4, 12]
    prompts = [prefix + [11, 13, 17], prefix + [14], prefix + [15, 16]]
    # Candidates that share first tokens, differ in length, and a one-token candidate.
    options = [[21, 22, 2], [21, 23, 2], [24, 2], [2], [21, 22, 25, 26, 2]]
    candidates = [options, options[:3], options[1:]]
    expected = [[_by_hand(model, prompt, tokens) for tokens in row] for prompt, row in zip(prompts, candidates)]
    for shared, row_tokens in ((len(prefix), 1024), (0, 1024), (len(prefix), 8)):  # packed together, or one prompt a row
        with torch.inference_mode():
            found = candidate_logprobs(model, prompts, candidates, prefix=shared, row_tokens=row_tokens)
        for got, want in zip(found, expected):
            assert [len(values) for values in got] == [len(values) for values in want]
            assert [v for values in got for v in values] == pytest.approx([v for values in want for v in values], abs=1e-4)
    assert keep_by()


def _greedy_by_hand(model, prompt, options):
    """Greedy decoding kept to the options: at each step the allowed next token with the highest logit."""
    written = []
    while written not in options:
        allowed = {tokens[len(written)] for tokens in options if tokens[: len(written)] == written and len(tokens) > len(written)}
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt + written])).logits[0, -1]
        written.append(max(allowed, key=lambda t: logits[t].item()))
    return options.index(written)


def test_the_answer_is_the_one_greedy_decoding_kept_to_the_candidates_writes(model):
    prefix = [3, 9, 4, 12]
    # Labels sharing one or two first tokens, of different lengths: where the sum of log-probabilities and the
    # greedy walk can disagree.
    options = [[21, 22, 2], [21, 23, 2], [21, 22, 25, 26, 2], [24, 2], [24, 27, 28, 2]]
    prompts = [prefix + [p, q] for p in range(11, 20) for q in (30, 31)]
    with torch.inference_mode():
        found = candidate_logprobs(model, prompts, [options] * len(prompts), prefix=len(prefix))
    picks = [greedy_choice(options, row) for row in found]
    assert picks == [_greedy_by_hand(model, prompt, options) for prompt in prompts]


def test_greedy_choice_walks_the_token_tree():
    options = [[5, 6, 2], [5, 7, 2], [8, 2]]
    # First token: 5 (shared by two) beats 8, then 7 beats 6, though [8, 2] has the highest total.
    assert greedy_choice(options, [[-0.5, -2.0, 0.0], [-0.5, -0.3, 0.0], [-0.6, 0.0]]) == 1
    assert greedy_choice(options, [[-0.5, -0.1, 0.0], [-0.5, -0.3, 0.0], [-0.9, 0.0]]) == 0
    assert greedy_choice(options, [[-1.5, -0.1, 0.0], [-1.5, -0.3, 0.0], [-0.2, -3.0]]) == 2
    # A label that is a prefix of another ends where end-of-sequence beats the longer label's next token.
    assert greedy_choice([[5, 2], [5, 6, 2]], [[-0.1, -0.2], [-0.1, -1.0, 0.0]]) == 0
    assert greedy_choice([[5, 2], [5, 6, 2]], [[-0.1, -1.2], [-0.1, -0.4, -3.0]]) == 1


@pytest.mark.parametrize("finetune", ["full", "lora"])
def test_short_packed_rows_train_with_eager_attention_and_sdpa_comes_back(tiny_model_dir, tmp_path, monkeypatch, finetune):
    """In bf16 on a CPU a packed row of up to SHORT_ROW tokens trains with eager attention, a longer one with SDPA;
    the trained student is left on SDPA, and the switch trains the same student as SDPA throughout (to bf16 rounding)."""
    from llm2llm.config import StudentConfig
    from llm2llm.students.hf import HFStudent

    monkeypatch.setattr(hf, "_pack_here", lambda: True)  # the packed path, on a GPU machine too
    seen, choose = [], hf._attention_for_row

    def recorded(model, length):
        choose(model, length)
        seen.append((length, model.config._attn_implementation))

    monkeypatch.setattr(hf, "_attention_for_row", recorded)
    system = {"role": "system", "content": "Sort the support ticket into billing, shipping or account. " * 3}
    pairs = [([system, {"role": "user", "content": "ticket " + "word " * n}], label)
             for n, label in zip(range(1, 25), ["billing", "shipping", "account"] * 8)]
    config = StudentConfig(model=tiny_model_dir, finetune=finetune, epochs=1, batch_size=4, dtype="bfloat16")

    def trained(short_row):
        monkeypatch.setattr(hf, "SHORT_ROW", short_row)
        seen.clear()
        student = HFStudent(config, seed=0)
        stats = student.train(pairs, tmp_path / f"student-{short_row}")
        assert student._in_memory[1].config._attn_implementation == "sdpa"
        return stats, list(seen)

    lengths = sorted(length for length, _ in trained(10**6)[1])
    middle = lengths[len(lengths) // 2]
    stats, rows = trained(middle)
    assert {impl for _, impl in rows} == {"eager", "sdpa"}
    assert all(impl == ("eager" if length <= middle else "sdpa") for length, impl in rows)
    eager_loss = trained(10**6)[0]["final_loss"]
    sdpa_stats, rows = trained(0)
    assert {impl for _, impl in rows} == {"sdpa"}
    assert eager_loss == pytest.approx(sdpa_stats["final_loss"], rel=2e-2)
    assert stats["final_loss"] == pytest.approx(sdpa_stats["final_loss"], rel=2e-2)
