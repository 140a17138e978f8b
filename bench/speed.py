"""Student speed on this machine, old path against new in one run: training tokens/s and % of the matmul peak in the
dtype it trains in, and prediction prompts/s (greedy generation against scoring the labels).

    python bench/speed.py [--model smollm2-135m-instruct] [--task trec] [--epochs 3] [--predict 200] [--rounds 1] [key=value ...]
    python bench/speed.py --random-init llama-1b [--tokenizer DIR]  # a GPU, where no weights can travel
    python bench/speed.py --compile  # also the default path with torch.compile: its compile time and steady speed

`--random-init` trains a randomly initialised model of that shape (SmolLM2-135M's, or a ~1B Llama-style one) with the
bundled SmolLM2 tokenizer (or the one in --tokenizer): speeds, not accuracies, mean something then. On a GPU the peak
is the bf16 (and fp32) matmul at 8192³ on that device, and the glibc allocator row is left out.

Training data: the task's paper-sized seed set from ../shared/data (TREC-60 by default; the packaged demo tickets
where the data is absent), the full fine-tune recipe of configs/<task>.yaml. Rows:
- the CPU capability and the matmul peak (2048², and at the model's own MLP shape) in fp32 and bf16;
- HFStudent.train with student.plain_forward=true (every row in full, vocabulary head at every position) and the
  allocator as before (the path before the speed work), the same with freed memory kept (hf._keep_freed_memory),
  the default path with packing off (padded rows, the head at targets only), the default path with a gradient
  clipping pass of its own (the default until the tenth session), the default path with SDPA attention on every
  packed row (the default until the twelfth session; now short rows in bf16 train with eager attention), and the
  default path; same seed and batches: tokens/s (tokens of the examples as written), speed-up, model FLOPs
  utilisation (6·N per example token, against the peak in the training dtype) and the share of tokens the new path
  actually computed; final loss and seed accuracy of each, which must agree;
- the weight-bound work a step cannot avoid at the recipe's batch size (the gradient norm and a fused AdamW step over
  the fp32 weights, and the casts to and from the training dtype), and the share of the peak in FLOPs done a step
  could reach were its matrix products at the peak and nothing else left (a ceiling, not a measurement);
- with --compile, the default path with the decoder body under `torch.compile(dynamic=True)` (packed rows vary in
  length), trained twice in this process: the first run pays the compilation, the second shows the steady speed
  (left out of the student: the README's speed paragraph says why);
- prediction on --predict test prompts: greedy generation and label scoring, prompts/s and their agreement.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from llm2llm.config import load_config  # noqa: E402
from llm2llm.loop import load_data  # noqa: E402
from llm2llm.models import resolve_hf  # noqa: E402
from llm2llm.students import answer_index, hf  # noqa: E402
from llm2llm.students.hf import HFStudent  # noqa: E402


DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
PEAK_SIZE = 8192 if DEVICE == "cuda" else 2048  # a 2048² product is too small to keep a GPU busy
# Shapes for --random-init (Llama architecture, SmolLM2's 49k vocabulary, tied embeddings)
SHAPES = {
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3),
    "llama-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8),
}


def matmul_peak(m=PEAK_SIZE, k=PEAK_SIZE, n=PEAK_SIZE, dtype=torch.float32, seconds=1.0) -> float:
    a, b = torch.randn(m, k, dtype=dtype, device=DEVICE), torch.randn(k, n, dtype=dtype, device=DEVICE)
    a @ b
    _sync()
    repeats, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(10 if DEVICE == "cuda" else 1):  # queue a few products between waits on the GPU
            a @ b
            repeats += 1
        _sync()
    return 2 * m * k * n * repeats / (time.perf_counter() - started) / 1e9


def weight_bound(model, train_dtype: torch.dtype, repeats: int = 5) -> tuple[float, float]:
    """Seconds a training step spends, at the least, on work that grows with the weights and not with the tokens: the
    gradient norm and one fused AdamW step over every fp32 weight (the student's own clip and step), and (training in
    a lower dtype) the weights cast to it and their gradients cast back, as autocast does each step. Medians of
    `repeats`; `model`: a freshly built one of the student's shape (its weights do not matter)."""
    params = list(model.to(DEVICE).parameters())
    for param in params:
        param.grad = torch.randn_like(param) * 1e-3
    optimizer = torch.optim.AdamW(params, lr=1e-5, fused=True)

    def timed(work) -> float:
        times = []
        for _ in range(repeats + 1):  # the first pays the optimizer states' allocation
            _sync()
            start = time.perf_counter()
            work()
            _sync()
            times.append(time.perf_counter() - start)
        return statistics.median(times[1:])

    step = timed(lambda: (hf._clip_in_step(optimizer, params, 1.0), optimizer.step()))
    if train_dtype == torch.float32:
        return step, 0.0
    low = [param.detach().to(train_dtype) for param in params]
    casts = timed(lambda: [param.detach().to(train_dtype) for param in params]) + timed(lambda: [g.float() for g in low])
    return step, casts


def _sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def random_model(shape: str, tokenizer_dir: str, target: Path) -> str:
    """A randomly initialised Llama-style model of `shape` with the given tokenizer, saved where a student loads it."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(**SHAPES[shape], head_dim=64, vocab_size=49152, tie_word_embeddings=True, rope_theta=100000.0,
                         max_position_embeddings=8192, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    LlamaForCausalLM(config).save_pretrained(target)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(target)
    return str(target)


def _answers(task, student, student_dir, examples, mode):
    prompts = [task.student_messages(e) for e in examples]
    started = time.perf_counter()
    if mode == "generate":
        answers = [task.extract_answer(o) for o in student.predict(student_dir, prompts, task.max_new_tokens)]
    else:
        choices = [task.answer_choices(e) for e in examples]
        scores = student.score(student_dir, prompts, choices)
        answers = [c[answer_index(s)] for c, s in zip(choices, scores)]
    return answers, len(examples) / (time.perf_counter() - started)


def _compiled_rows(config, pairs, tmp: Path, old_rate: float) -> list[tuple]:
    """The default path with the decoder body compiled, trained twice (a new model each time, as the loop does):
    the first pays dynamo and inductor, the second reuses their work."""
    load_base, rows, walls = HFStudent._load_base, [], []

    def compiled_load(self, *args, **kwargs):
        model, tokenizer = load_base(self, *args, **kwargs)
        model.get_decoder().compile(dynamic=True)  # in place: the saved weights keep their names
        return model, tokenizer

    HFStudent._load_base = compiled_load
    try:
        for run in ("first", "second"):
            started = time.perf_counter()
            stats = HFStudent(config.student, seed=0).train(pairs, tmp / f"compiled-{run}")
            walls.append(time.perf_counter() - started)
            rows.append((f"train new + torch.compile, {run} run", f"{stats['train_tokens_per_s']:.0f} tok/s "
                         f"({stats['train_tokens_per_s'] / old_rate:.2f}x)", f"{walls[-1]:.0f} s in all",
                         f"final loss {stats['final_loss']}"))
    finally:
        HFStudent._load_base = load_base
    rows.append(("  compilation (first run's wall - second's)", f"{walls[0] - walls[1]:.0f} s", "", ""))
    return rows


def _tokens_fed(task, student, examples) -> tuple[float, float]:
    """Tokens a prompt puts through the model: greedy at least its whole prompt (its batch's left padding and the
    decoding steps come on top); scoring its prompt without the shared prefix (computed once a batch), plus each
    answer's tokens but the last (the prompt's last position reads every answer's first token)."""
    from transformers import AutoTokenizer

    from llm2llm.students.forward import common_prefix_length
    from llm2llm.students.hf import encode_prompt, encode_target

    tokenizer = AutoTokenizer.from_pretrained(resolve_hf(student.config.model))
    prompts = [encode_prompt(tokenizer, task.student_messages(e)) for e in examples]
    answers = [sum(len(encode_target(tokenizer, c)) - 1 for c in task.answer_choices(e)) for e in examples]
    prefix = common_prefix_length(prompts, [len(p) for p in prompts])
    batches = -(-len(prompts) // student.config.eval_batch_size)
    scored = sum(len(p) - prefix for p in prompts) + sum(answers) + prefix * batches
    return sum(map(len, prompts)) / len(prompts), scored / len(prompts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--task", default="trec", help="configs/<task>.yaml (a classification task)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--predict", type=int, default=200, help="test prompts to predict")
    parser.add_argument("--random-init", choices=list(SHAPES), help="train a randomly initialised model of this shape")
    parser.add_argument("--tokenizer", help="tokenizer folder for --random-init (default: the bundled SmolLM2's)")
    parser.add_argument("--rounds", type=int, default=1, help="train the rows this many times, each row's median kept")
    parser.add_argument("--compile", action="store_true", help="also train the default path under torch.compile")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides (data.seed_path=..., student.batch_size=...)")
    args = parser.parse_args()
    scratch = tempfile.TemporaryDirectory()
    if args.random_init:
        args.model = random_model(args.random_init, args.tokenizer or resolve_hf("smollm2-135m-instruct"), Path(scratch.name) / "model")

    overrides = [f"student.model={args.model}", f"student.epochs={args.epochs}", *args.overrides]
    if (ROOT.parent / "shared" / "data").is_dir() or any(o.startswith("data.seed_path=") for o in args.overrides):
        config = load_config(ROOT / "configs" / f"{args.task}.yaml", overrides)
    else:
        print("../shared/data is absent: using the packaged demo tickets")
        config = load_config(None, [*overrides, "student.finetune=full"])
    seeds, test, task = load_data(config)
    pairs = [(task.student_messages(e), task.target(e)) for e in seeds]
    from transformers import AutoConfig, AutoModelForCausalLM

    shape = AutoConfig.from_pretrained(resolve_hf(args.model))
    reference = AutoModelForCausalLM.from_config(shape)  # counts the parameters; times the weight-bound work below
    n_params = reference.num_parameters()
    probe = HFStudent(config.student, seed=0)
    train_dtype = probe._dtype()
    peaks = {dtype: matmul_peak(dtype=dtype) for dtype in (torch.float32, torch.bfloat16)}
    shape_peak = matmul_peak(8 * 100, shape.hidden_size, shape.intermediate_size, dtype=train_dtype)
    peak = peaks[train_dtype]
    rows = [("GPU", torch.cuda.get_device_name(), f"CUDA {torch.version.cuda}", "") if DEVICE == "cuda" else
            ("CPU capability", torch.backends.cpu.get_cpu_capability(), f"{torch.get_num_threads()} threads", "")]
    rows += [(f"{str(d).split('.')[-1]} matmul peak ({PEAK_SIZE}²)", f"{p:.0f} GFLOP/s", "← training dtype" if d == train_dtype else "", "")
             for d, p in peaks.items()]
    rows.append((f"{str(train_dtype).split('.')[-1]} matmul at model shape (800×{shape.hidden_size}×{shape.intermediate_size})",
                 f"{shape_peak:.0f} GFLOP/s", "", ""))

    trained, rates = {}, {}
    keep_freed_memory, clip_in_step, short_row = hf._keep_freed_memory, hf._clip_in_step, hf.SHORT_ROW
    with tempfile.TemporaryDirectory() as tmp:
        # The old path first, before the allocator setting (process-wide once made) exists; then the same forward with
        # it, to tell the two changes apart; then the new path.
        # (name, plain forward, allocator setting, packing allowed, the clip folded into the step, eager attention
        # for short packed rows); the padded-rows path tells packing's share apart, the next two the folded clip's and
        # the short rows' attention.
        paths = (("old: plain forward", True, False, True, False, True),
                 ("old forward, freed memory kept", True, True, True, False, True),
                 ("new, padded rows: head at targets", False, True, False, True, True),
                 ("new, the clip's own pass", False, True, True, False, True),
                 ("new, SDPA attention on every row", False, True, True, True, False),
                 ("new: shared prefix, head at targets", False, True, True, True, True))
        paths = [p for p in paths if DEVICE == "cpu" or p[0] != "old forward, freed memory kept"]
        # --rounds: the rows again in the same order, each row's median kept (a shared machine's speed drifts by 10%
        # from minute to minute); the allocator-less row only in the first round, as the setting cannot be undone.
        for round_ in range(args.rounds):
            for name, plain, allocator, packing, folded, short_rows in [p for p in paths if round_ == 0 or p[2]]:
                hf._keep_freed_memory = keep_freed_memory if allocator else (lambda: None)
                hf._pack_here = lambda packing=packing: packing  # the packed row is measured on a GPU too
                hf._clip_in_step = clip_in_step if folded else (lambda optimizer, params, max_norm: torch.nn.utils.clip_grad_norm_(params, max_norm))
                hf.SHORT_ROW = short_row if short_rows else 0  # no row is short: SDPA throughout
                student = HFStudent(config.student.model_copy(update={"plain_forward": plain}), seed=0)
                stats = student.train(pairs, Path(tmp) / name)
                rates.setdefault(name, []).append(stats["train_tokens_per_s"])
                if round_ == 0:
                    answers, _ = _answers(task, student, Path(tmp) / name, seeds, "score")
                    trained[name] = (student, stats, sum(a == e.label for a, e in zip(answers, seeds)) / len(seeds))
        hf._clip_in_step, hf.SHORT_ROW = clip_in_step, short_row  # the student's own, for the rows below
        for name, *_ in paths:
            student, stats, accuracy = trained[name]
            rate = statistics.median(rates[name])
            mfu = rate * 6 * n_params / 1e9 / peak
            computed = stats["train_tokens_computed"] / stats["train_tokens"]
            speedup = rate / statistics.median(rates["old: plain forward"])
            spread = f" [{min(rates[name]):.0f}–{max(rates[name]):.0f}]" if len(rates[name]) > 1 else ""
            rows.append((f"train {name}", f"{rate:.0f} tok/s{spread} ({speedup:.2f}x)",
                         f"MFU {100 * mfu:.0f}% of peak; computed {100 * computed:.0f}% of the tokens "
                         f"({100 * mfu * computed:.0f}% of peak in FLOPs done)",
                         f"final loss {stats['final_loss']}, seed acc {100 * accuracy:.1f}%"))
        # What no change to the forward and backward can remove at this batch size: the work per step that grows with
        # the weights. With the matmuls at the peak, the FLOPs share a step could reach is theirs over both.
        if config.student.finetune == "full":
            stats = trained["new: shared prefix, head at targets"][1]
            optimizer_s, casts_s = weight_bound(reference, train_dtype)
            computed_a_step = stats["train_tokens_computed"] / stats["train_steps"]
            flops_s = 6 * n_params * computed_a_step / (peak * 1e9)
            rows.append(("  weight-bound work a step, at the least", f"{optimizer_s + casts_s:.3f} s",
                         f"gradient norm and fused AdamW {optimizer_s:.3f} s, casts to "
                         f"{str(train_dtype).split('.')[-1]} and back {casts_s:.3f} s",
                         f"{computed_a_step:.0f} tokens computed a step take {flops_s:.3f} s at the peak: at most "
                         f"{100 * flops_s / (flops_s + optimizer_s + casts_s):.0f}% of peak in FLOPs done"))
        if args.compile:
            rows += _compiled_rows(config, pairs, Path(tmp), statistics.median(rates["old: plain forward"]))
        student = trained["new: shared prefix, head at targets"][0]
        examples = test[: args.predict]
        directory = Path(tmp) / "new: shared prefix, head at targets"
        generated, generate_rate = _answers(task, student, directory, examples, "generate")
        scored, score_rate = _answers(task, student, directory, examples, "score")
        agree = sum(a == b for a, b in zip(generated, scored)) / len(examples)
        valid = [(a, b) for a, b in zip(generated, scored) if a is not None]
        rows.append((f"predict {len(examples)} test prompts: greedy", f"{generate_rate:.1f} prompts/s",
                     f"test acc {100 * sum(a == e.label for a, e in zip(generated, examples)) / len(examples):.1f}%", ""))
        rows.append(("predict: score the labels", f"{score_rate:.1f} prompts/s ({score_rate / generate_rate:.2f}x)",
                     f"test acc {100 * sum(a == e.label for a, e in zip(scored, examples)) / len(examples):.1f}%",
                     f"agrees with greedy on {100 * agree:.1f}% ({100 * sum(a == b for a, b in valid) / max(len(valid), 1):.1f}% "
                     f"where greedy gave a label; {len(examples) - len(valid)} greedy outputs name no label)"))
        fed_greedy, fed_scored = _tokens_fed(task, student, examples)
        rows.append(("  tokens fed a prompt: greedy ≥ the prompt", f"{fed_greedy:.1f}", f"scoring {fed_scored:.1f}",
                     f"so scoring can be at most ~{fed_greedy / fed_scored:.1f}x faster in FLOPs"))

    model = f"randomly initialised {args.random_init} shape" if args.random_init else args.model
    print(f"\nmodel {model} ({n_params / 1e6:.0f}M params), {config.name}: {len(pairs)} pairs × {args.epochs} epochs, "
          f"batch {config.student.batch_size}, full fine-tune on {DEVICE}, trains in {str(train_dtype).split('.')[-1]}, torch {torch.__version__}\n")
    widths = [max(len(str(row[i])) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())


if __name__ == "__main__":
    main()
