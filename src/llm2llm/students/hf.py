"""Hugging Face causal-LM student: LoRA or full fine-tuning from the base weights, batched greedy prediction.

Training is a plain PyTorch loop driven by `accelerate` (the same code runs on CPU, one GPU, or several under
`accelerate launch`). The loss covers the target tokens only. Examples are grouped by length so batches carry
little padding, which is most of the speed on CPU.
"""

from __future__ import annotations

import ctypes
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

from llm2llm.config import StudentConfig
from llm2llm.errors import ModelError
from llm2llm.models import resolve_hf
from llm2llm.students import Advance, Messages, Scores
from llm2llm.students.forward import (IGNORE_INDEX, PACKABLE, SHORT_ROW, candidate_logprobs, causal_lm_loss, collate_rows,
                                      common_prefix_length, greedy_choice, worth_packing)
from llm2llm.students.sharing import Share, gathered, place, training_shares



def _import_torch():
    try:
        import torch
        import transformers  # noqa: F401
    except ImportError as exc:
        raise ModelError(f"the hf student needs torch and transformers ({exc.name} is missing): pip install llm2llm") from None
    return torch


def _pack_here() -> bool:
    """Packing pays on a CPU only. On a GPU the packed row's mask costs more than the FLOPs it saves, and padded rows
    with the head at targets train fastest (H100, bench/speed.py: 2.61x the plain forward against 2.18x packed for
    SmolLM2-135M, 1.33x against 1.03x for a 1B Llama)."""
    return not _import_torch().cuda.is_available()


def _clip_in_step(optimizer, params, max_norm: float) -> None:
    """Gradient clipping to max_norm without a pass over the gradients of its own: fused AdamW divides each gradient by
    its `grad_scale` as it reads it (the hook AMP's unscaling uses), so the clip's multiply rides in the optimizer step.
    The same update as clip_grad_norm_ followed by the step, to float rounding."""
    torch = _import_torch()
    norms = [torch.linalg.vector_norm(p.grad, dtype=torch.float32) for p in params if p.grad is not None]
    optimizer.grad_scale = torch.clamp((torch.linalg.vector_norm(torch.stack(norms)) + 1e-6) / max_norm, min=1.0) if norms else None


def _attention_for_row(model, length: int) -> None:
    """Eager attention for a packed row of up to SHORT_ROW tokens, SDPA for a longer one (forward.SHORT_ROW says why);
    the implementation changes only when the row's length crosses the line."""
    wanted = "eager" if length <= SHORT_ROW else "sdpa"
    if model.config._attn_implementation != wanted:
        model.set_attn_implementation(wanted)


def _keep_freed_memory() -> None:
    """Let glibc keep freed memory for reuse instead of returning every large block to the OS at once.

    Each training step of a tied-embedding model makes fresh 100+ MB gradient buffers (the 49k-word embedding);
    glibc serves blocks that large with mmap and unmaps them when freed, so every step page-faults them in again.
    Serving them from the heap and not trimming it (mallopt M_MMAP_MAX=0, M_TRIM_THRESHOLD=1 GiB) makes CPU
    training about 15% faster (bench/speed.py); the process keeps up to 1 GiB of freed memory. Linux/glibc only."""
    if sys.platform != "linux":
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-4, 0)  # M_MMAP_MAX
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        pass


def encode_prompt(tokenizer, messages: Messages) -> list[int]:
    """The one prompt renderer, shared by training and prediction: the chat template when there is one."""
    if tokenizer.chat_template:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return tokenizer(text, add_special_tokens=False).input_ids
    text = "\n\n".join(message["content"] for message in messages) + "\n\nAnswer: "
    return tokenizer(text, add_special_tokens=True).input_ids


def encode_target(tokenizer, target: str) -> list[int]:
    """A complete answer: its tokens and end-of-sequence (trained on, and scored, as one)."""
    return tokenizer(target, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]


def encode_pair(tokenizer, messages: Messages, target: str, max_length: int) -> tuple[list[int], list[int]]:
    """input_ids and labels for one training pair; prompt tokens are masked out of the loss."""
    prompt_ids = encode_prompt(tokenizer, messages)
    target_ids = encode_target(tokenizer, target)[: max_length - 1]
    prompt_ids = prompt_ids[-(max_length - len(target_ids)) :]  # cut long prompts on the left, keep the question end
    return prompt_ids + target_ids, [IGNORE_INDEX] * len(prompt_ids) + target_ids


class LengthGroupedBatches:
    """Seeded shuffle, then sort within windows of 50 batches by length, then shuffle the batches."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int) -> None:
        self.lengths, self.batch_size, self.seed, self.epoch = lengths, batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        rng = random.Random(self.seed * 1000 + self.epoch)
        indices = list(range(len(self.lengths)))
        rng.shuffle(indices)
        window = 50 * self.batch_size
        batches = []
        for start in range(0, len(indices), window):
            chunk = sorted(indices[start : start + window], key=lambda i: -self.lengths[i])
            batches += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        rng.shuffle(batches)
        return iter(batches)

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)


class HFStudent:
    def __init__(self, config: StudentConfig, seed: int) -> None:
        self.config = config
        self.seed = seed
        self._in_memory: tuple[Path, Any, Any] | None = None  # (student_dir, model, tokenizer) after train()
        # Train and predict in this process only, though others were launched with it: an out-of-fold student trained
        # side by side with others (distributed.py). Otherwise every launched process takes part in each call.
        self.alone = False

    shares_work = True  # trains and predicts with the other launched processes (distributed.py)

    # ── setup ───────────────────────────────────────────────────────────────────────────────────
    @property
    def learning_rate(self) -> float:
        if self.config.learning_rate is not None:
            return self.config.learning_rate
        return 1e-3 if self.config.finetune == "lora" else 5e-5

    def _dtype(self):
        torch = _import_torch()
        if self.config.dtype != "auto":
            return getattr(torch, self.config.dtype)
        if torch.cuda.is_available():
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
        # bf16 matmuls are fast on CPUs with AVX512-BF16/AMX, and still correct (slower) elsewhere.
        return torch.bfloat16 if torch.backends.cpu.get_cpu_capability() in ("AVX512", "AVX512_BF16", "AMX") else torch.float32

    def _load_base(self, dtype=None, weights: Path | None = None):
        """The base model's tokenizer with its weights, or with a fully fine-tuned student's `weights`."""
        torch = _import_torch()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if self.config.num_threads:
            torch.set_num_threads(self.config.num_threads)
        path = resolve_hf(self.config.model)
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(weights or path, dtype=dtype or self._dtype())
        except OSError as exc:
            if weights is not None:
                raise ModelError(f"student.continue_training: cannot load the previous student in {weights} ({exc}); "
                                 "delete that iteration's state to retrain it") from None
            raise ModelError(f"student.model: cannot load {self.config.model!r} ({exc})") from None
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        return model, tokenizer

    # ── fine-tune ───────────────────────────────────────────────────────────────────────────────
    def train_steps(self, n_pairs: int) -> int:
        return self.config.epochs * math.ceil(n_pairs / self.config.batch_size)

    def train(self, pairs: list[tuple[Messages, str]], out_dir: Path, advance: Advance | None = None,
              init_from: Path | None = None) -> dict[str, Any]:
        torch = _import_torch()
        from accelerate import Accelerator
        from accelerate.utils import DistributedType
        from transformers import get_scheduler

        self._in_memory = None
        torch.manual_seed(self.seed)
        compute_dtype = self._dtype()
        if not torch.cuda.is_available():
            _keep_freed_memory()
        # Trained weights stay float32 with bf16/fp16 autocast for the matmuls: in pure bf16, AdamW updates
        # at fine-tuning learning rates are below the weights' resolution and are lost. A frozen LoRA base
        # can live in the compute dtype.
        weights_dtype = compute_dtype if self.config.finetune == "lora" else torch.float32
        # From the base weights every time (paper §3.1: re-training from scratch beats continuing, Table 5),
        # unless init_from names an earlier student to continue (the ablation).
        model, tokenizer = self._load_base(weights_dtype, weights=init_from if self.config.finetune == "full" else None)
        base_fingerprint = _fingerprint(model)
        if init_from is not None and self.config.finetune == "lora":
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, init_from, is_trainable=True)
        elif self.config.finetune == "lora":
            model = self._add_lora(model)
        encoded = [encode_pair(tokenizer, messages, target, self.config.max_length) for messages, target in pairs]
        batches = LengthGroupedBatches([len(ids) for ids, _ in encoded], self.config.batch_size, self.seed)
        pad_id = tokenizer.pad_token_id
        # The prompt prefix every example shares (the task's system prompt) is computed once per batch where that
        # saves work: the batch becomes one packed row (students/forward.py).
        prefix = 0 if self.config.plain_forward else common_prefix_length(
            [ids for ids, _ in encoded], [labels.count(IGNORE_INDEX) for _, labels in encoded])
        packable = prefix > 0 and model.config._attn_implementation in PACKABLE and _pack_here()
        # Short packed rows in bf16/fp16 on a CPU: eager attention (_attention_for_row), SDPA again after training.
        # by_row: the (unwrapped) model whose attention follows each row's length; None: SDPA or eager throughout.
        by_row = None
        if packable and compute_dtype != torch.float32 and model.config._attn_implementation == "sdpa":
            model.set_attn_implementation("eager")
            if model.config._attn_implementation == "eager":  # else it cannot be switched (transformers warns once)
                by_row = model
        shape = model.config.get_text_config()
        size = (shape.hidden_size, shape.num_hidden_layers, model.num_parameters())

        computed = [0]  # tokens that went through the model (padding included, a shared prefix once per packed row)

        def collate(batch):
            rows = [encoded[i] for i in batch]
            pack = packable and worth_packing([len(ids) for ids, _ in rows], prefix, *size)
            collated = collate_rows(rows, prefix, pad_id, pack)
            computed[0] += collated["input_ids"].numel()
            return collated

        loader = torch.utils.data.DataLoader(range(len(encoded)), batch_sampler=batches, collate_fn=collate)
        accelerator = Accelerator(cpu=not torch.cuda.is_available())
        together = accelerator.num_processes > 1 and not self.alone  # one model, every launched process (distributed.py)
        # Autocast directly rather than accelerate's mixed_precision, which also copies the (batch x length x
        # vocabulary) logits to fp32: 14% slower on this CPU (bench/speed.py).
        autocast = torch.autocast(accelerator.device.type, dtype=compute_dtype, enabled=compute_dtype != torch.float32)
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=self.learning_rate, weight_decay=self.config.weight_decay, fused=True)
        total_steps = self.config.epochs * len(loader)
        scheduler = get_scheduler("linear", optimizer, int(self.config.warmup_ratio * total_steps), total_steps)
        if together:
            # DDP, or FSDP where the accelerate config asks: the processes split every batch (sharing.py). The schedule
            # stays unprepared: it steps once per batch, as in one process (accelerate's would step once per process).
            model, optimizer = accelerator.prepare(model, optimizer)
            clipped = list(model.parameters())  # FSDP clips its own sharded parameters; frozen ones have no gradient
            targets = [sum(label != IGNORE_INDEX for label in labels) for _, labels in encoded]
        else:  # this process's device only: one process, or one of several training a student alone (no DDP)
            model.to(accelerator.device)
            clipped = trainable

        def steps():
            """Each step's batch (together: this process's share of it) and its Share (None: the batch's mean loss)."""
            if together:
                yield from training_shares(batches, targets, collate, accelerator.process_index, accelerator.num_processes,
                                           accelerator.device)
            else:
                for batch in loader:
                    yield {key: value.to(accelerator.device) for key, value in batch.items()}, None

        model.train()
        # Tokens of the examples as written (a shared prefix counts for each): tokens/s compares across code paths.
        log, tokens, started = [], self.config.epochs * sum(len(ids) for ids, _ in encoded), time.perf_counter()
        for epoch in range(self.config.epochs):
            batches.set_epoch(epoch)
            for batch, share in steps():
                if by_row is not None:
                    _attention_for_row(by_row, batch["input_ids"].shape[1])
                with autocast:
                    loss = self._loss(model, batch, share)
                accelerator.backward(loss)
                if together or self.config.plain_forward:  # the processes' clip (accelerate's), or the old path's
                    accelerator.clip_grad_norm_(clipped, 1.0)
                else:
                    _clip_in_step(optimizer, clipped, 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                shown = accelerator.reduce(loss.detach(), "mean") if together else loss  # the whole batch's mean loss
                log.append({"step": len(log) + 1, "epoch": epoch, "loss": round(shown.item(), 4)})
                if advance:
                    advance(1)
        seconds = time.perf_counter() - started
        if by_row is not None:
            by_row.set_attn_implementation("sdpa")

        # FSDP: every process holds a shard; the whole weights are gathered on the main process to be saved.
        state_dict = accelerator.get_state_dict(model) if together and accelerator.distributed_type == DistributedType.FSDP else None
        model = accelerator.unwrap_model(model)
        model.eval()
        if self.config.finetune == "full" and state_dict is None:
            model.to(compute_dtype)  # evaluation runs in the compute dtype; saving it halves the checkpoint
        elif self.config.finetune == "full":
            state_dict = {key: value.to(compute_dtype) for key, value in state_dict.items()}
        if accelerator.is_main_process:  # of the launched ones; alone or in one process, this one
            out_dir.mkdir(parents=True, exist_ok=True)
            model.save_pretrained(out_dir, **({"state_dict": state_dict} if state_dict is not None else {}))
            tokenizer.save_pretrained(out_dir)
            with open(out_dir / "train_log.jsonl", "w", encoding="utf-8") as handle:
                handle.writelines(json.dumps(row) + "\n" for row in log)
        if together:
            computed[0] = int(accelerator.reduce(torch.tensor(computed[0], device=accelerator.device), "sum"))
            accelerator.wait_for_everyone()  # the student is on disk before any process reads it back
        if state_dict is None and self.config.finetune == "lora":
            model = model.merge_and_unload()  # plain weights generate faster than adapter layers
        # Under FSDP no process holds the whole student: it is read back from disk to predict.
        self._in_memory = (out_dir, model, tokenizer) if state_dict is None else None
        return {
            "train_examples": len(pairs),
            "train_steps": len(log),
            "train_tokens": tokens,
            "train_tokens_per_s": round(tokens / seconds, 1) if seconds else None,
            "train_tokens_computed": computed[0],
            "final_loss": log[-1]["loss"] if log else None,
            "base_fingerprint": base_fingerprint,
            "trained_fingerprint": _fingerprint(model) if state_dict is None else None,
        }

    def _loss(self, model, batch: dict[str, Any], share: Share | None):
        """The batch's mean loss over its target tokens; a process's share of a batch: its summed loss over the
        batch's target tokens per process (sharing.py)."""
        if share is None:
            return model(**batch).loss if self.config.plain_forward else causal_lm_loss(model, **batch)
        if self.config.plain_forward:
            loss = model(**batch, num_items_in_batch=share.tokens).loss
        else:
            loss = causal_lm_loss(model, **batch, num_items_in_batch=share.tokens)
        return loss * 0 if share.stand_in else loss

    def _add_lora(self, model):
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError:
            raise ModelError("student.finetune=lora needs peft: pip install peft") from None
        lora = self.config.lora
        config = LoraConfig(
            r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules, task_type="CAUSAL_LM"
        )
        return get_peft_model(model, config)

    # ── predict ─────────────────────────────────────────────────────────────────────────────────
    def _load_trained(self, student_dir: Path):
        if self._in_memory is not None and self._in_memory[0] == student_dir:
            return self._in_memory[1], self._in_memory[2]
        if not (student_dir / "config.json").is_file() and not (student_dir / "adapter_config.json").is_file():
            raise ModelError(f"no trained student in {student_dir}; delete the iteration's state to retrain")
        torch = _import_torch()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if (student_dir / "adapter_config.json").is_file():
            from peft import PeftModel

            base, _ = self._load_base()
            model = PeftModel.from_pretrained(base, student_dir).merge_and_unload()
        else:
            model = AutoModelForCausalLM.from_pretrained(student_dir, dtype=self._dtype())
        tokenizer = AutoTokenizer.from_pretrained(student_dir)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        model.eval()
        if torch.cuda.is_available():
            model.to("cuda")
        self._in_memory = (student_dir, model, tokenizer)
        return model, tokenizer

    def predict(self, student_dir: Path, prompts: list[Messages], max_new_tokens: int, advance: Advance | None = None) -> list[str]:
        torch = _import_torch()
        from transformers import GenerationConfig

        model, tokenizer = self._load_trained(student_dir)
        limit = self.config.max_length - max_new_tokens
        encoded = [encode_prompt(tokenizer, messages)[-limit:] for messages in prompts]
        # Longest first, so each batch pads little and a memory problem shows up at once.
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        generation = GenerationConfig(
            do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id
        )
        outputs: list[str] = [""] * len(encoded)
        device = next(model.parameters()).device
        mine = self._my_batches(order)
        for batch in mine:
            width = max(len(encoded[i]) for i in batch)
            input_ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):  # left padding: generation continues right after each prompt
                input_ids[row, width - len(encoded[i]) :] = torch.tensor(encoded[i])
                attention[row, width - len(encoded[i]) :] = 1
            with torch.inference_mode():
                generated = model.generate(
                    input_ids=input_ids.to(device), attention_mask=attention.to(device), generation_config=generation
                )
            for row, i in enumerate(batch):
                outputs[i] = tokenizer.decode(generated[row, width:], skip_special_tokens=True).strip()
            if advance:
                advance(len(batch))
        return self._all_answers(outputs, mine, advance)

    def score(self, student_dir: Path, prompts: list[Messages], candidates: list[list[str]],
              advance: Advance | None = None, per_token: bool = False) -> list[list[float]]:
        """Log-probability of each candidate answer (its tokens and end-of-sequence; per token with per_token) after
        its prompt, teacher-forced, and (`Scores.greedy`) the one greedy decoding kept to the candidates would write:
        prompts and candidates packed into rows that share the prompts' common prefix (students/forward.py)."""
        torch = _import_torch()

        model, tokenizer = self._load_trained(student_dir)
        options = [[encode_target(tokenizer, c) for c in row] for row in candidates]
        encoded = [encode_prompt(tokenizer, m)[-(self.config.max_length - max(map(len, o))):] for m, o in zip(prompts, options)]
        prefix = common_prefix_length(encoded, [len(ids) for ids in encoded])
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        scores: list[Scores] = [Scores() for _ in encoded]
        mine = self._my_batches(order)
        with torch.inference_mode():
            for batch in mine:
                found = candidate_logprobs(model, [encoded[i] for i in batch], [options[i] for i in batch], prefix)
                for i, row in zip(batch, found):
                    totals = [sum(values) / (len(values) if per_token else 1) for values in row]
                    scores[i] = Scores(totals, greedy=greedy_choice(options[i], row))
                if advance:
                    advance(len(batch))
        return self._all_answers(scores, mine, advance)

    def _my_batches(self, order: list[int]) -> list[list[int]]:
        """The prediction batches this process computes: every one in one process (or alone); with others, every
        N-th, the others' share going to them (sharing.py). The batches are those of one process, so are the answers."""
        size = self.config.eval_batch_size
        batches = [order[start : start + size] for start in range(0, len(order), size)]
        rank, processes = (0, 1) if self.alone else place()
        return batches[rank::processes]

    def _all_answers(self, answers: list[Any], mine: list[list[int]], advance: Advance | None) -> list[Any]:
        """The answers of every process, in order, where several shared the batches."""
        if self.alone or place()[1] == 1:
            return answers
        filled = [i for batch in mine for i in batch]
        answers = gathered(answers, filled)
        if advance:
            advance(len(answers) - len(filled))  # the other processes' batches
        return answers

    def release(self) -> None:
        self._in_memory = None


def _fingerprint(model) -> str:
    """A cheap checksum of all weights: tells base weights from trained ones in the training record."""
    torch = _import_torch()
    with torch.no_grad():
        total = sum(float(p.detach().double().abs().sum()) for p in model.parameters())
    return f"{total:.6e}"
