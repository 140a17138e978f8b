"""Does LLM2LLM beat what users would do anyway? `llm2llm compare` on the paper's classification tasks.

    python bench/quality.py [--tasks trec sst2 snips] [--repeats 3] [--only-repeats R ...] [--methods ...]
                            [--variants ...]
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
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

from rich.console import Console

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from llm2llm import report  # noqa: E402
from llm2llm.compare import HEADERS, Method, cells, compare, table_rows  # noqa: E402
from llm2llm.data import read_examples, read_jsonl  # noqa: E402
from llm2llm.loop import run  # noqa: E402
from llm2llm.progress import RichUI  # noqa: E402

# Per task: overrides, and the real-data rows at 2x and 3x the seed count (the ceiling real data gives).
TASKS = {
    "trec": (["data.test_limit=500"], 60),
    "sst2": (["data.test_limit=400"], 20),
    "snips": ([], 70),
}
SHARED = ["loop.iterations=2", "eval.test_every_iteration=true", "teacher.max_concurrency=2"]
DEFAULT = "oof_form_all_s6"  # the variant that spells out what `llm2llm run` does with no select/teacher keys set
NOTES = "<!-- notes: written by hand, kept when the bench rewrites this file -->"
METHODS = ["finetune"]
VARIANTS = [  # issue 11: where the teacher writes from, on the tuned 5-epoch student; every row paired with finetune
    "paper=llm2llm select.by=train_errors",  # the paper's selection: wrong after training on them
    # (select.by other than train_errors now implies 3 requests and the form prompt: these rows spell out 1 and off)
    "oof=llm2llm select.by=out_of_fold teacher.samples_per_wrong=1 task.teacher_keep_form=false",  # wrong when held out (3 folds)
    # the paper's errors plus the least confident 20% of the seeds
    "confidence=llm2llm select.by=confidence teacher.samples_per_wrong=1 task.teacher_keep_form=false",
    "oof_confidence=llm2llm select.by=out_of_fold+confidence teacher.samples_per_wrong=1 task.teacher_keep_form=false",
    # how much to ask for (3 requests a parent), and in what form: the seed's wording kept by a similarity check, the
    # teacher asked to keep the seed's form, or both
    "oof_s3=llm2llm select.by=out_of_fold teacher.samples_per_wrong=3 task.teacher_keep_form=false",  # amount alone
    "oof_like_s3=llm2llm select.by=out_of_fold teacher.samples_per_wrong=3 quality.min_seed_rouge_l=0.3 task.teacher_keep_form=false",
    "oof_form_s3=llm2llm select.by=out_of_fold teacher.samples_per_wrong=3 quality.min_seed_rouge_l=0.3 task.teacher_keep_form=true",
    # the default loop from the flip until 6 requests won (TREC-60, second session of 2026-12-06)
    "oof_form_all_s3=llm2llm select.by=out_of_fold teacher.samples_per_wrong=3 task.teacher_keep_form=true",
    # count-matched to the oof row of the same repeat (the same extra overrides; the baselines ask as the paper does)
    "auggpt_oof=auggpt select.by=out_of_fold teacher.samples_per_wrong=1 task.teacher_keep_form=false",
    "more_data_oof=more_data select.by=out_of_fold teacher.samples_per_wrong=1 task.teacher_keep_form=false",
    # count-matched to oof_form_all_s3 of the same repeat
    "auggpt_s3=auggpt select.by=out_of_fold teacher.samples_per_wrong=3 task.teacher_keep_form=true",
    "more_data_s3=more_data select.by=out_of_fold teacher.samples_per_wrong=3 task.teacher_keep_form=true",
    # the default loop's requests spread over the labels in the seeds' shares, one a seed in turn (select.spread); it
    # takes iteration 0's folds from the default loop's run (keeping no weights lets it) and skips the last
    # iteration's folds, which only estimate (the test figures are the same students')
    "oof_spread_s3=llm2llm select.by=out_of_fold teacher.samples_per_wrong=3 task.teacher_keep_form=true select.spread=true "
    "select.estimate_every_iteration=false student.keep_checkpoints=none",
    # the same, dealt in the chosen seeds' label shares (the labels the student confuses): only the parents spread
    "oof_spread_err_s3=llm2llm select.by=out_of_fold teacher.samples_per_wrong=3 task.teacher_keep_form=true select.spread=true "
    "select.spread_by=errors select.estimate_every_iteration=false student.keep_checkpoints=none",
    # the default loop (DEFAULT: what `llm2llm run` does with no select/teacher keys set), spelled out: 6 requests a
    # parent (each run has its own reply cache: all 6 are asked afresh); the two keys after them change no result
    "oof_form_all_s6=llm2llm select.by=out_of_fold teacher.samples_per_wrong=6 task.teacher_keep_form=true "
    "select.estimate_every_iteration=false student.keep_checkpoints=none",
    # count-matched to the 6-request default (oof_form_all_s6) of the same repeat: the same extra overrides
    "auggpt_s6=auggpt select.by=out_of_fold teacher.samples_per_wrong=6 task.teacher_keep_form=true "
    "select.estimate_every_iteration=false student.keep_checkpoints=none",
    "more_data_s6=more_data select.by=out_of_fold teacher.samples_per_wrong=6 task.teacher_keep_form=true "
    "select.estimate_every_iteration=false student.keep_checkpoints=none",
    # how many: the default loop asking 12 times a parent. A request's sampling seed comes from its key, so its first
    # 6 requests a parent are the default's own (same replies): it holds the default's candidates and 6 more
    "oof_form_all_s12=llm2llm select.by=out_of_fold teacher.samples_per_wrong=12 task.teacher_keep_form=true "
    "select.estimate_every_iteration=false student.keep_checkpoints=none",
    # the default loop with 3 seeds of the label the student answered instead shown to the teacher, for contrast
    "oof_contrast_s6=llm2llm select.by=out_of_fold teacher.samples_per_wrong=6 task.teacher_keep_form=true "
    "task.teacher_contrast_examples=3 select.estimate_every_iteration=false student.keep_checkpoints=none",
    # the default loop, the request naming the seed's first word and a reply that changes it rejected
    "oof_open_s3=llm2llm select.by=out_of_fold teacher.samples_per_wrong=3 task.teacher_keep_form=true "
    "task.teacher_keep_opening=true select.estimate_every_iteration=false student.keep_checkpoints=none",
    # the default loop with the teacher's examples in the seeds' surface form (case, punctuation)
    "oof_form_all_s3_seedform=llm2llm select.by=out_of_fold teacher.samples_per_wrong=3 task.teacher_keep_form=true quality.match_seed_form=true",
    # the default loop with confidence selection (issue 11 item 3) at its settings: the out-of-fold errors plus the
    # seeds answered right whose gold answer is least probable out of fold (12 of 60 on TREC); and confidence alone
    # (no folds: training errors plus the least probable of the seeds answered right after training on them)
    "oof_confidence_s6=llm2llm select.by=out_of_fold+confidence teacher.samples_per_wrong=6 task.teacher_keep_form=true "
    "select.estimate_every_iteration=false student.keep_checkpoints=none",
    "confidence_s6=llm2llm select.by=confidence teacher.samples_per_wrong=6 task.teacher_keep_form=true "
    "student.keep_checkpoints=none",
    # the default loop plus the seeds its trained student gets wrong though their fold's student got them right
    # (select.with_train_errors): the labels an under-trained student leans away from (SST-2-20 repeats 2 and 4)
    "oof_trained_s6=llm2llm select.by=out_of_fold select.with_train_errors=true teacher.samples_per_wrong=6 "
    "task.teacher_keep_form=true select.estimate_every_iteration=false student.keep_checkpoints=none",
    "real_2x=more_data augment.count={seeds}",  # real data: seeds + as many again
    "real_3x=more_data augment.count={seeds2}",
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
    parser.add_argument("--only-repeats", nargs="+", type=int, metavar="R", help="start runs of these repeats only "
                        "(0-based, below --repeats; e.g. the one repeat another machine did not finish); finished runs "
                        "of the others are still reported")
    parser.add_argument("--refits", action="store_true", help="each run's test accuracy: the mean over its training "
                        "seeds in <run>/refits.json (bench/refit.py), where it has them")
    parser.add_argument("overrides", nargs="*", help="key=value overrides for every run")
    args = parser.parse_args()
    if not (ROOT.parent / "shared" / "data").is_dir():
        sys.exit("bench/quality.py needs the benchmark data in ../shared/data (see the README); it is not here.")

    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    console, ui = Console(width=160), RichUI()
    sections, started = [], time.perf_counter()
    for task in args.tasks:
        task_started = time.perf_counter()
        task_overrides, n_seeds = TASKS[task]
        methods = [Method.parse(m) for m in args.methods] + [
            Method.parse(v.format(seeds=n_seeds, seeds2=2 * n_seeds)) for v in args.variants]
        overrides = [*task_overrides, *SHARED, f"output_dir={args.out}", f"name={task}", *args.overrides]

        def run_one(config):
            if args.report_only or (args.only_repeats is not None and _repeat(config) not in args.only_repeats):
                return None
            store = run(config, ui=ui)
            report.write(store)
            return store

        summary = compare(ROOT / "configs" / f"{task}.yaml", overrides, methods, args.repeats, run_one, log=console.print)
        summary = _with_refits(summary) if args.refits else summary
        sections.append(_section(task, summary, (time.perf_counter() - task_started) / 60, [m.label for m in methods]))
        console.print(sections[-1], markup=False, highlight=False)
        _write(args, sections, (time.perf_counter() - started) / 60)  # after each task, so a partial bench is kept
    console.print(f"wrote {args.results}")


def _repeat(config) -> int:
    """The repeat a compare run belongs to, from the name compare gives it (r<repeat>-<hash>)."""
    return int(config.name.split("-", 1)[0].removeprefix("r"))


def _with_refits(summary: dict) -> dict:
    """Each run's test accuracy replaced by its mean over training seeds (bench/refit.py), where it was refit; the
    table recomputed from them: 3 seeds leave a paired difference a third of the variance batch order gives one run."""
    runs = []
    for r in summary["runs"]:
        path = Path(r.get("run_dir") or "") / "refits.json"
        seeds = json.loads(path.read_text())["seeds"] if "skipped" not in r and path.is_file() else {}
        if len(seeds) > 1:
            r = {**r, "test_accuracy": statistics.mean(seeds.values()), "refit_seeds": len(seeds)}
        runs.append(r)
    return {**summary, "runs": runs, "table": table_rows(runs, [row["method"] for row in summary["table"]])}


def _section(task: str, summary: dict, minutes: float, asked: list[str]) -> str:
    """The task's part of --results: its rows in the order asked for (--methods, then --variants), then the finished
    rows of earlier invocations that this one did not name."""
    shown = [o for o in summary["overrides"] if not o.startswith("output_dir=")]
    finished = {r["method"] for r in summary["runs"] if "skipped" not in r}
    not_run = [row["method"] for row in summary["table"] if row["method"] not in finished]
    order = {label: i for i, label in enumerate(asked)}
    table = sorted((row for row in summary["table"] if row["method"] in finished),
                   key=lambda row: order.get(row["method"], len(order)))
    summary = {**summary, "table": table}
    lines = [f"## {task}", "", f"`compare` of configs/{task}.yaml with `{' '.join(shown)}`; "
             f"{summary['repeats']} repeat(s); the runs took {sum(row['minutes'] for row in summary['table']):.0f} min "
             f"(stage times summed), {minutes:.0f} min of it in this invocation (reused runs cost none).", "",
             "| " + " | ".join(HEADERS[:5] + ["vs default [95% CI]"] + HEADERS[5:]) + " |", "|" + "---|" * (len(HEADERS) + 1)]
    # the paired difference from the default loop's row, formatted as the one from finetune (the 5th cell)
    vs_default = {row["method"]: row["vs_reference"]
                  for row in table_rows(summary["runs"], [row["method"] for row in table], reference=DEFAULT)}
    for row in summary["table"]:
        row_cells = cells(row)
        row_cells.insert(5, cells({**row, "vs_reference": vs_default.get(row["method"])})[4])
        lines.append("| " + " | ".join(row_cells) + " |")
    lines += [f"\nNo finished run on this task yet: {', '.join(not_run)}."] if not_run else []
    refit = Counter(r["method"] for r in summary["runs"] if r.get("refit_seeds"))
    if refit:
        seeds = max(r.get("refit_seeds", 0) for r in summary["runs"])
        rows = ", ".join(f"{m} ({n} runs)" for m, n in refit.items())
        lines.append(f"\n--refits: a run's accuracy is the mean over {seeds} training seeds of its final student "
                     f"(bench/refit.py) in {rows}; elsewhere the run's own.")
    lines += ["", "What the teacher produced (all repeats): requests, kept, rejections by reason.", "",
              "| method | teacher requests | parents by reason | kept | rejected by reason | seed acc per iteration (repeat 0) | "
              "out-of-fold acc per iteration (repeat 0) |", "|---|---|---|---|---|---|---|"]
    for row in summary["table"]:
        runs = [r for r in summary["runs"] if r["method"] == row["method"] and "skipped" not in r]
        if not runs:
            continue
        reasons = sum((Counter(r["rejected_by_reason"]) for r in runs), Counter())
        parents = sum((Counter(_parents(r["run_dir"])) for r in runs), Counter())
        oof = [a for a in runs[0].get("oof_by_iteration") or [] if a is not None]
        lines.append(f"| {row['method']} | {sum(r['teacher_requests'] for r in runs)} | "
                     f"{', '.join(f'{k} {v}' for k, v in sorted(parents.items())) or '—'} | {sum(r['augmented'] for r in runs)} | "
                     f"{', '.join(f'{k} {v}' for k, v in sorted(reasons.items())) or '—'} | "
                     f"{' → '.join(f'{100 * a:.1f}' for a in runs[0]['seed_accuracy'])} | "
                     f"{' → '.join(f'{100 * a:.1f}' for a in oof) or '—'} |")
    lines += ["", *_oof_tracking(summary), "", *_per_label(summary), "", *_samples(summary), ""]
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


def _parents(run_dir: str) -> Counter:
    """Parents chosen over the run's generating iterations, by reason (wrong, low_confidence)."""
    stages = [json.loads(path.read_text()) for path in Path(run_dir).glob("iter_*/metrics.json")]
    return sum((Counter(m.get("parents_by_reason") or {}) for m in stages if "generate" in m.get("stage_seconds", {})), Counter())


def _oof_tracking(summary: dict) -> list[str]:
    """How well the test-free estimate tracks the truth: out-of-fold against test accuracy, per run and iteration,
    and whether the iteration it names as best is the best on the test set."""
    pairs, picks = [], []
    for r in summary["runs"]:
        if "skipped" in r or not any(a is not None for a in r.get("oof_by_iteration") or []):
            continue
        tested = [(o, t) for o, t in zip(r["oof_by_iteration"], r["test_by_iteration"]) if o is not None and t is not None]
        pairs += tested
        if r.get("best_iteration") is not None and len(tested) > 1:
            best_test = max(t for _, t in tested)
            picks.append(r["test_at_best"] - best_test)
    if not pairs:
        return []
    errors = [100 * (o - t) for o, t in pairs]
    lines = ["Out-of-fold accuracy (no test set) against test accuracy, every run and iteration that has both "
             f"({len(pairs)} pairs): mean difference {statistics.mean(errors):+.1f} points, mean absolute difference "
             f"{statistics.mean(abs(e) for e in errors):.1f}"]
    if len(pairs) > 2:
        lines[-1] += f", correlation {statistics.correlation([o for o, _ in pairs], [t for _, t in pairs]):.2f}"
    if picks:
        lines[-1] += (f". The iteration named best by out-of-fold accuracy was the best on the test set in "
                      f"{sum(p == 0 for p in picks)} of {len(picks)} runs (mean test points lost: {-100 * statistics.mean(picks):.1f})")
    return [lines[-1] + "."]


def _samples(summary: dict, limit: int = 8) -> list[str]:
    """A few kept examples of the default loop's first repeat (the first loop row where it did not run), beside the
    seed each was made from."""
    loop_labels = {m["label"] for m in summary["methods"] if m["method"] == "llm2llm"}
    loops = [row["method"] for row in summary["table"] if row["method"] in loop_labels]
    label = DEFAULT if DEFAULT in loops else (loops[0] if loops else None)
    run_dirs = [r["run_dir"] for r in summary["runs"] if r["method"] == label and r["repeat"] == 0 and "skipped" not in r]
    if not run_dirs:
        return []
    examples = [e for path in sorted(Path(run_dirs[0]).glob("iter_*/train.jsonl"))[-1:] for e in read_examples(path)]
    by_id = {e.id: e for e in examples}
    generated = [e for e in examples if e.origin == "teacher"][:limit]
    lines = [f"Examples the {label} row kept (repeat 0), beside their seed:", "", "| seed (label) | generated (label) |", "|---|---|"]
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
        "Student: bundled SmolLM2-135M-Instruct, full fine-tune, 5 epochs, batch 8, lr 5e-5, fp32 weights (bf16 "
        "autocast where the CPU has native bf16), predictions by scoring the labels. Teacher and verifier: bundled "
        "Qwen2.5-Coder-1.5B-Instruct (llama.cpp, local). Loop: 2 iterations (the second trains on D_1 and is tested), "
        "seed-only sources, from the base weights each time; out-of-fold rows use 3 folds, also in the last "
        "iteration (for its estimate). Count-matched rows add as many examples as the same repeat's loop row with "
        "the same extra overrides added (auggpt_s6 and more_data_s6 match oof_form_all_s6, the default loop spelled "
        "out; auggpt_s3 and more_data_s3 match oof_form_all_s3); real_2x and real_3x add real rows "
        "up to 2x and 3x the seeds. Mean ± sample std over repeats (seed, seed+1, ...); 'vs finetune' is the mean "
        "paired difference (same repeat, same seed) with its 95% t interval, **real** where it excludes zero.", "",
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
