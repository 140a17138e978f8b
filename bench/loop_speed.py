"""The whole loop's wall time, old student path against new: TREC-60, 2 iterations, end to end.

    python bench/loop_speed.py [--task trec] [--iterations 2] [--test-limit 500] [key=value ...]

Two runs of configs/<task>.yaml in a temporary directory, each with its own teacher cache (both pay the teacher):
- old: student.plain_forward=true eval.predict=generate (every training row in full, greedy decoding);
- new: the defaults (shared prompt prefix once per batch, head at target positions, scored predictions).
Printed: minutes per stage (summed over iterations) and in total for each, the speed-up, and the share of the wall
time spent outside training, prediction and the teacher (startup, data, selection, checkpoint loading and saving).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from llm2llm.config import load_config  # noqa: E402
from llm2llm.loop import run  # noqa: E402
from llm2llm.progress import RichUI  # noqa: E402

PATHS = {"old": ["student.plain_forward=true", "eval.predict=generate"], "new": []}


def measure(task: str, overrides: list[str], out: Path, name: str) -> dict:
    config = load_config(ROOT / "configs" / f"{task}.yaml", [*overrides, f"output_dir={out}", f"name={name}"])
    started = time.perf_counter()
    store = run(config, ui=RichUI())
    wall = time.perf_counter() - started
    stages: Counter = Counter()
    train = 0.0
    for iteration in store.iterations():
        metrics = store.metrics(iteration)
        for stage, seconds in metrics.get("stage_seconds", {}).items():
            stages["fold" if stage.startswith("fold_") else stage] += seconds or 0
        if metrics.get("train_tokens_per_s"):
            train += metrics["train_tokens"] / metrics["train_tokens_per_s"]
    predict = stages["evaluate"] + stages["test"]
    teacher = stages["generate"]
    return {"wall": wall, "stages": stages, "train": train, "predict": predict, "teacher": teacher,
            "load_save": stages["finetune"] - train, "outside": wall - stages["finetune"] - predict - teacher - stages["fold"],
            "test_accuracy": store.metrics(store.iterations()[-1]).get("test_accuracy")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="trec")
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--test-limit", type=int, default=500)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if not (ROOT.parent / "shared" / "data").is_dir():
        sys.exit("bench/loop_speed.py needs the benchmark data in ../shared/data (see the README); it is not here.")
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    shared = [f"loop.iterations={args.iterations}", f"data.test_limit={args.test_limit}", "eval.test_every_iteration=false",
              "teacher.max_concurrency=2", *args.overrides]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for path, extra in PATHS.items():
            results[path] = measure(args.task, [*shared, *extra], Path(tmp), path)
    stages = sorted({s for r in results.values() for s in r["stages"]}, key=["finetune", "evaluate", "fold", "select", "test",
                                                                             "generate", "append"].index)
    print(f"\n{args.task}, {args.iterations} iterations, {' '.join(shared)}: minutes")
    print("| path | " + " | ".join(stages) + " | total (wall) | of which training | checkpoint load/save | outside train, "
          "predict, teacher | test acc |")
    print("|---|" + "---|" * (len(stages) + 5))
    for path, r in results.items():
        print(f"| {path} | " + " | ".join(f"{r['stages'][s] / 60:.2f}" for s in stages)
              + f" | {r['wall'] / 60:.2f} | {r['train'] / 60:.2f} | {r['load_save'] / 60:.2f} | "
              f"{r['outside'] / 60:.2f} ({100 * r['outside'] / r['wall']:.1f}%) | {100 * (r['test_accuracy'] or 0):.1f} |")
    print(f"\nspeed-up of the whole loop: {results['old']['wall'] / results['new']['wall']:.2f}x")


if __name__ == "__main__":
    main()
