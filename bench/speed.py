"""Student speed on this machine: training tokens/s and % of the bf16 matmul peak, against a plain PyTorch loop.

    python bench/speed.py [--model smollm2-135m-instruct] [--pairs 96] [--batch-size 8]

Rows: the measured bf16 matmul peak; llm2llm's HFStudent.train (full and LoRA); a bare PyTorch loop over the same
batches (fp32 weights + bf16 autocast, AdamW) as the reference; batched greedy generation. Model FLOPs per
trained token are 6N for full fine-tuning and 4N for LoRA (no weight gradients for the frozen base), N = parameters.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from llm2llm.config import StudentConfig, TaskConfig  # noqa: E402
from llm2llm.data import load_examples  # noqa: E402
from llm2llm.models import resolve_hf  # noqa: E402
from llm2llm.students.hf import HFStudent, LengthGroupedBatches, encode_pair  # noqa: E402
from llm2llm.tasks import build_task  # noqa: E402


def matmul_peak(m=2048, k=2048, n=2048, dtype=torch.bfloat16, repeats=20) -> float:
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    for _ in range(3):
        a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * m * k * n * repeats / (time.perf_counter() - started) / 1e9


def training_pairs(n: int):
    seeds = load_examples("demo:test.jsonl", text_field="text", label_field="label", origin="seed")
    task = build_task(TaskConfig(), seeds)
    return [(task.student_messages(e), task.target(e)) for e in (seeds * (n // len(seeds) + 1))[:n]], task


def plain_loop(model_path: str, pairs, batch_size: int) -> float:
    """The reference: the same batches through a bare loop with no library around it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    encoded = [encode_pair(tokenizer, m, t, 512) for m, t in pairs]
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)
    tokens, started = 0, time.perf_counter()
    for batch in LengthGroupedBatches([len(ids) for ids, _ in encoded], batch_size, seed=0):
        width = max(len(encoded[i][0]) for i in batch)
        ids = torch.full((len(batch), width), tokenizer.eos_token_id)
        labels = torch.full((len(batch), width), -100)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            n = len(encoded[i][0])
            ids[row, :n], labels[row, :n], mask[row, :n] = torch.tensor(encoded[i][0]), torch.tensor(encoded[i][1]), 1
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        tokens += int(mask.sum())
    return tokens / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--pairs", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    torch.manual_seed(0)
    model_path = resolve_hf(args.model)
    from transformers import AutoConfig, AutoModelForCausalLM

    model_config = AutoConfig.from_pretrained(model_path)
    n_params = AutoModelForCausalLM.from_config(model_config).num_parameters()
    pairs, task = training_pairs(args.pairs)
    peak = matmul_peak()
    # The student's own matmul shape: one batch of ~8 x 100 tokens through a 576 -> 1536 MLP projection.
    hidden, inner = model_config.hidden_size, model_config.intermediate_size
    shape_peak = matmul_peak(8 * 100, hidden, inner, repeats=200)
    rows = [
        ("bf16 matmul peak (2048²)", f"{peak:.0f} GFLOP/s", "", ""),
        (f"bf16 matmul at model shape (800×{hidden}×{inner})", f"{shape_peak:.0f} GFLOP/s", "", ""),
    ]

    def add(name: str, tokens_per_s: float, flops_per_token: float) -> None:
        achieved = tokens_per_s * flops_per_token / 1e9
        rows.append((name, f"{tokens_per_s:.0f} tok/s", f"{achieved:.0f} GFLOP/s",
                     f"{100 * achieved / peak:.0f}% of peak, {100 * achieved / shape_peak:.0f}% of shape peak"))

    add("plain PyTorch loop, full FT", plain_loop(model_path, pairs, args.batch_size), 6 * n_params)
    with tempfile.TemporaryDirectory() as tmp:
        for mode, flops in (("full", 6 * n_params), ("lora", 4 * n_params)):
            student = HFStudent(StudentConfig(model=args.model, finetune=mode, epochs=1, batch_size=args.batch_size), seed=0)
            stats = student.train(pairs, Path(tmp) / mode)
            add(f"llm2llm HFStudent, {mode}", stats["train_tokens_per_s"], flops)
        prompts = [messages for messages, _ in pairs[:64]]
        started = time.perf_counter()
        outputs = student.predict(Path(tmp) / "lora", prompts, task.max_new_tokens)
        seconds = time.perf_counter() - started
        rows.append((f"greedy predict, batch {student.config.eval_batch_size}", f"{len(prompts) / seconds:.1f} prompts/s",
                     f"{sum(len(o) for o in outputs)} chars out", ""))

    print(f"\nmodel {args.model} ({n_params / 1e6:.0f}M params), {args.pairs} pairs, batch {args.batch_size}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    widths = [max(len(str(row[i])) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)))


if __name__ == "__main__":
    main()
