"""Does LLM2LLM beat what users would do anyway? `llm2llm compare` on the paper's classification tasks.

    python bench/quality.py [--tasks trec sst2 snips] [--repeats 3] [--methods ...] [--variants ...]
                            [--out runs/bench-quality] [--results docs/results.md] [key=value ...]

For each task: configs/<task>.yaml (bundled SmolLM2-135M student, full fine-tune, 5 epochs, batch 8, lr 5e-5;
bundled Qwen2.5-Coder-1.5B teacher) at the paper's seed size, the methods of `compare` plus rows that isolate
label verification, de-duplication and the student recipe (VARIANTS). The table, the exact command, versions and
wall time go to --results, with what explains the numbers: the teacher's acceptance and rejection reasons,
per-label test accuracy, and a few generated examples beside their seeds. Every run is resumable and finished
runs are reused, so the bench can be stopped and restarted, or given more repeats, at no cost for what is done.
Only the sections of --tasks are rewritten in --results; other tasks' sections and the hand notes are kept.
Reads ../shared/data; exits with a message where it is absent.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import shlex
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

from rich.console import Console

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from llm2llm import report  # noqa: E402
from llm2llm.compare import HEADERS, Method, cells, compare  # noqa: E402
from llm2llm.data import read_examples, read_jsonl  # noqa: E402
from llm2llm.loop import run  # noqa: E402
from llm2llm.progress import RichUI  # noqa: E402

TASKS = {"trec": ["data.test_limit=500"], "sst2": ["data.test_limit=400"], "snips": []}
SHARED = ["loop.iterations=3", "eval.test_every_iteration=false", "teacher.max_concurrency=2"]
NOTES = "<!-- notes: written by hand, kept when the bench rewrites this file -->"
METHODS = ["finetune", "llm2llm", "auggpt", "eda", "more_data"]
VARIANTS = [  # isolate the recipe and the quality filters where the loop has work: an under-trained student
    "finetune_e2=finetune student.epochs=2",
    "llm2llm_e2=llm2llm student.epochs=2",
    "no_verify_e2=llm2llm student.epochs=2 quality.verify=false",  # label verification off
    "no_dedup_e2=llm2llm student.epochs=2 quality.near_duplicate_rouge_l=1.0",  # near-duplicates kept (exact ones dropped)
    # the paper's ablations (Tables 4-6), on the same student; one_shot_e2 adds what llm2llm_e2 added
    "one_shot_e2=one_shot student.epochs=2",
    "source_all_e2=source_all student.epochs=2",
    "continue_e2=continue_training student.epochs=2",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--variants", nargs="*", default=VARIANTS, help="'label=method key=value ...' rows")
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench-quality"))
    parser.add_argument("--results", default=str(ROOT / "docs" / "results.md"))
    parser.add_argument("--report-only", action="store_true", help="write the results from finished runs; start none")
    parser.add_argument("overrides", nargs="*", help="key=value overrides for every run")
    args = parser.parse_args()
    if not (ROOT.parent / "shared" / "data").is_dir():
        sys.exit("bench/quality.py needs the benchmark data in ../shared/data (see the README); it is not here.")

    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    console, ui = Console(width=160), RichUI()
    methods = [Method.parse(m) for m in args.methods] + [Method.parse(v) for v in args.variants]
    sections, started = [], time.perf_counter()
    for task in args.tasks:
        task_started = time.perf_counter()
        overrides = [*TASKS[task], *SHARED, f"output_dir={args.out}", f"name={task}", *args.overrides]

        def run_one(config):
            if args.report_only:
                return None
            store = run(config, ui=ui)
            report.write(store)
            return store

        summary = compare(ROOT / "configs" / f"{task}.yaml", overrides, methods, args.repeats, run_one, log=console.print)
        sections.append(_section(task, summary, (time.perf_counter() - task_started) / 60))
        console.print(sections[-1], markup=False, highlight=False)
        _write(args, sections, (time.perf_counter() - started) / 60)  # after each task, so a partial bench is kept
    console.print(f"wrote {args.results}")


def _section(task: str, summary: dict, minutes: float) -> str:
    shown = [o for o in summary["overrides"] if not o.startswith("output_dir=")]
    lines = [f"## {task}", "", f"`compare` of configs/{task}.yaml with `{' '.join(shown)}`; "
             f"{summary['repeats']} repeat(s); the runs took {sum(row['minutes'] for row in summary['table']):.0f} min "
             f"(stage times summed), {minutes:.0f} min of it in this invocation (reused runs cost none).", "",
             "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(cells(row)) + " |" for row in summary["table"]]
    lines += ["", "What the teacher produced (all repeats): requests, kept, rejections by reason.", "",
              "| method | teacher requests | kept | rejected by reason | seed acc per iteration (repeat 0) |", "|---|---|---|---|---|"]
    for row in summary["table"]:
        runs = [r for r in summary["runs"] if r["method"] == row["method"] and "skipped" not in r]
        if not runs:
            continue
        reasons = sum((Counter(r["rejected_by_reason"]) for r in runs), Counter())
        lines.append(f"| {row['method']} | {sum(r['teacher_requests'] for r in runs)} | {sum(r['augmented'] for r in runs)} | "
                     f"{', '.join(f'{k} {v}' for k, v in sorted(reasons.items())) or '—'} | "
                     f"{' → '.join(f'{100 * a:.1f}' for a in runs[0]['seed_accuracy'])} |")
    lines += ["", *_per_label(summary), "", *_samples(summary), ""]
    return "\n".join(lines)


def _per_label(summary: dict) -> list[str]:
    """Test accuracy per gold label, pooled over repeats: where the methods differ."""
    accuracy: dict[str, dict[str, list[bool]]] = {}
    for r in summary["runs"]:
        if "skipped" in r:
            continue
        last = sorted(Path(r["run_dir"]).glob("iter_*/test_predictions.jsonl"))[-1]
        for row in read_jsonl(last):
            accuracy.setdefault(r["method"], defaultdict(list))[row["label"]].append(row["correct"])
    labels = sorted({label for per in accuracy.values() for label in per})
    lines = ["Test accuracy (%) per gold label, pooled over repeats:", "", "| method | " + " | ".join(labels) + " |",
             "|---|" + "---|" * len(labels)]
    for method in [row["method"] for row in summary["table"] if row["method"] in accuracy]:  # the table's order
        per = accuracy[method]
        lines.append(f"| {method} | " + " | ".join(f"{100 * sum(per[l]) / len(per[l]):.0f}" if per[l] else "—" for l in labels) + " |")
    return lines


def _samples(summary: dict, limit: int = 6) -> list[str]:
    """A few kept examples of the loop's first repeat, beside the seed each was made from."""
    run_dirs = [r["run_dir"] for r in summary["runs"] if r["method"] == "llm2llm" and r["repeat"] == 0 and "skipped" not in r]
    if not run_dirs:
        return []
    examples = [e for path in sorted(Path(run_dirs[0]).glob("iter_*/train.jsonl"))[-1:] for e in read_examples(path)]
    by_id = {e.id: e for e in examples}
    generated = [e for e in examples if e.origin == "teacher"][:limit]
    lines = ["Examples the loop kept (repeat 0), beside their seed:", "", "| seed (label) | generated (label) |", "|---|---|"]
    lines += [f"| {_cell(by_id[e.parent_id].text)} ({by_id[e.parent_id].label}) | {_cell(e.text)} ({e.label}) |"
              for e in generated if e.parent_id in by_id]
    return lines if generated else []


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:120]


def _write(args, sections: list[str], minutes: float) -> None:
    versions = ", ".join(f"{name} {importlib.metadata.version(name)}" for name in ("torch", "transformers", "peft", "xllamacpp"))
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    head = [
        "# LLM2LLM against baselines: measured", "",
        f"Command: `python bench/{Path(__file__).name} {shlex.join(sys.argv[1:])}`"
        + (" (this file, from runs finished by earlier invocations of the bench, resumed and reused across them; "
           "each task's section gives the runs' own minutes)  " if args.report_only else "  "),
        f"Code: llm2llm at commit {commit or 'unknown'}; {versions}; Python {platform.python_version()}  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, no GPU. This invocation's wall time: {minutes:.0f} min.", "",
        "Student: bundled SmolLM2-135M-Instruct, full fine-tune, 5 epochs, batch 8, lr 5e-5, fp32 weights with bf16 "
        "autocast, greedy decoding. Teacher and verifier: bundled Qwen2.5-Coder-1.5B-Instruct (llama.cpp, local). "
        "Loop: 3 iterations, seed-only sources, from the base weights each time. Count-matched methods add as many "
        "examples as the same repeat's llm2llm run with the same student added (one_shot_e2 matches llm2llm_e2). "
        "Mean ± sample std over repeats (seed, seed+1, ...).", "",
    ]
    results = Path(args.results)
    old, _, notes = results.read_text(encoding="utf-8").partition(NOTES) if results.is_file() else ("", "", "")
    # Tasks not run in this invocation keep their section from the file, in TASKS order.
    kept = {part.split("\n", 1)[0]: "## " + part.rstrip("\n") + "\n" for part in old.split("\n## ")[1:]}
    ours = {section.split("\n", 1)[0][3:]: section for section in sections}
    merged = [ours.get(task) or kept[task] for task in TASKS if task in ours or task in kept]
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text("\n".join(head + merged) + f"\n{NOTES}{notes or chr(10)}", encoding="utf-8")


if __name__ == "__main__":
    main()
