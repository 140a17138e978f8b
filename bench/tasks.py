"""Short end-to-end runs of the paper's five tasks: bundled SmolLM2-135M student, bundled Qwen2.5-Coder-1.5B teacher.

    python bench/tasks.py [--tasks gsm8k casehold snips trec sst2] [--iterations 2] [--out runs/bench-tasks] [key=value ...]

Each task runs configs/<task>.yaml at reduced size (see SIZES) with the test set evaluated every iteration, then
one table prints a row per task: seed and test accuracy per iteration, teacher requests, accepted examples,
rejections by reason, minutes. Extra key=value overrides apply to every run (e.g. quality.verify=false), and
--suffix names the runs apart. Finished runs are reused (resume), so re-printing the table costs nothing.
Reads ../shared/data; exits with a message where it is absent.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from llm2llm.config import load_config  # noqa: E402
from llm2llm.loop import run  # noqa: E402
from llm2llm.progress import RichUI  # noqa: E402
from llm2llm.report import rows  # noqa: E402

# Reduced sizes that finish in minutes on 2 CPU cores; classification keeps the paper's seed sets and full tests.
SIZES = {
    "gsm8k": ["data.seed_limit=16", "data.test_limit=30"],
    "casehold": ["data.seed_limit=20", "data.test_limit=40"],
    "snips": [],
    "trec": [],
    "sst2": ["data.test_limit=400"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench-tasks"))
    parser.add_argument("--suffix", default="", help="appended to each run name, to keep variants apart")
    parser.add_argument("overrides", nargs="*", help="key=value overrides for every run")
    args = parser.parse_args()
    if not (ROOT.parent / "shared" / "data").is_dir():
        sys.exit("bench/tasks.py needs the benchmark data in ../shared/data (see the README); it is not here.")

    summary = Table(title=f"{args.iterations}-iteration runs · SmolLM2-135M full FT · Qwen2.5-Coder-1.5B teacher", padding=(0, 1))
    for header in ("task", "seeds", "test", "seed acc", "test acc", "asked", "verified", "kept", "rejected by reason", "min"):
        summary.add_column(header, justify="right" if header not in ("task", "rejected by reason") else "left")
    for name in args.tasks:
        config = load_config(ROOT / "configs" / f"{name}.yaml", [
            *SIZES[name], f"loop.iterations={args.iterations}", "eval.test_every_iteration=true",
            "teacher.max_concurrency=2", f"output_dir={args.out}", f"name={name}{args.suffix}", *args.overrides,
        ])
        started = time.perf_counter()
        store = run(config, ui=RichUI())
        wall = (time.perf_counter() - started) / 60
        metrics = rows(store)
        reasons: dict[str, int] = {}
        for m in metrics:
            for reason, count in (m.get("rejected_by_reason") or {}).items():
                reasons[reason] = reasons.get(reason, 0) + count
        summary.add_row(
            name, str(metrics[0]["seeds"]), str(metrics[-1].get("test_examples", "—")),
            " → ".join(f"{100 * m['seed_accuracy']:.1f}" for m in metrics),
            " → ".join(f"{100 * m['test_accuracy']:.1f}" for m in metrics if m.get("test_accuracy") is not None),
            str(sum(m.get("requests", 0) for m in metrics)), str(sum(m.get("verify_requests", 0) for m in metrics)),
            str(sum(m.get("accepted", 0) for m in metrics)),
            ", ".join(f"{reason} {count}" for reason, count in sorted(reasons.items())) or "—",
            f"{sum(m['minutes'] for m in metrics):.1f}" + ("" if wall > 0.1 else " (reused)"),
        )
    Console(width=160).print(summary)


if __name__ == "__main__":
    main()
