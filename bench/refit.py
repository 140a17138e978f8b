"""How much of a run's test accuracy is its training seed? Retrain finished runs' final students with other seeds.

    python bench/refit.py RUN_DIR [RUN_DIR ...] [--seeds 3] [--soup]
    python bench/refit.py runs/bench-quality/trec/finetune/r* runs/bench-quality/trec/oof_form_all_s6/r*
    python bench/refit.py RUN_DIR ... --seeds 2 --reuse-own  # one student more a run: the own seed is the run's

For each finished run: the training set of its last tested iteration, retrained from the base weights with the run's
own seed (which reproduces its test accuracy exactly; the table says where it does not) and with --seeds - 1 others
(seed + 100, seed + 200, ...), each tested on the run's test set. Only the batch order and the initial random state
differ between them. The table gives each run's test accuracy per training seed and their mean; under it, per
directory of runs (a row of `compare`), the mean and the pooled within-run standard deviation: how far one run moves
from batch order alone. `bench/quality.py --refits` reads the means in place of the runs' single accuracies.
With --soup, also the uniform average of those students' weights (a model soup, full fine-tunes only), tested the
same way. With --reuse-own the run's own seed is not trained again: its accuracy is the run's (retrained, 25 of 25
runs reproduced it to the decimal), which halves the cost of --seeds 2. Each run's figures go to <run>/refits.json; a
training seed found there is not trained again.
Trains one student at a time, in this process: a second torch process on this 2-core machine slows both far more than
twice.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from llm2llm.answers import ask, questions, write_predictions  # noqa: E402
from llm2llm.data import read_examples  # noqa: E402
from llm2llm.loop import load_data  # noqa: E402
from llm2llm.runstore import RunStore  # noqa: E402
from llm2llm.students import build_student  # noqa: E402

console = Console(width=160)


def refit(run_dir: Path, n_seeds: int, soup: bool, reuse_own: bool = False) -> dict:
    """The run's refits.json after training what it lacks: {"iteration", "run_accuracy", "seeds": {seed: accuracy},
    "soup": {"seeds", "test_accuracy"} (with --soup)}."""
    store = RunStore(run_dir)
    config = store.config()
    tested = [i for i in store.iterations() if store.done(i, "test")]
    if not tested:
        raise SystemExit(f"{run_dir}: no iteration was tested; finish the run first")
    last = tested[-1]
    path = run_dir / "refits.json"
    done = json.loads(path.read_text()) if path.is_file() else {}
    if done.get("iteration") != last:
        done = {}
    done.update(iteration=last, run_accuracy=store.info(last, "test")["test_accuracy"])
    seeds_done = done.setdefault("seeds", {})
    if reuse_own:  # (a soup retrains every seed, this one too)
        seeds_done.setdefault(str(config.seed), done["run_accuracy"])
    wanted = [config.seed + 100 * k for k in range(n_seeds)]
    if all(str(s) in seeds_done for s in wanted) and (not soup or done.get("soup", {}).get("seeds") == wanted):
        return done  # nothing to train: the data is not read
    _, test, task = load_data(config)
    pairs = [(task.student_messages(e), task.target(e)) for e in read_examples(store.iter_dir(last) / "train.jsonl")]
    with tempfile.TemporaryDirectory() as scratch:
        for seed in wanted:
            if str(seed) in seeds_done and not soup:  # a soup needs every student's weights: all are trained again
                continue
            student = build_student(config.student, seed)
            student.train(pairs, Path(scratch) / str(seed))
            seeds_done[str(seed)] = _test(student, Path(scratch) / str(seed), task, test, config, run_dir, seed)
            path.write_text(json.dumps(done, indent=1))
            console.print(f"{run_dir}: seed {seed}: {seeds_done[str(seed)]:.1%}", highlight=False)
        if soup:
            accuracy = _test(build_student(config.student, config.seed), _average(Path(scratch), wanted), task, test,
                             config, run_dir, "soup")
            done["soup"] = {"seeds": wanted, "test_accuracy": accuracy}
            path.write_text(json.dumps(done, indent=1))
    return done


def _test(student, student_dir: Path, task, test, config, run_dir: Path, name) -> float:
    context = SimpleNamespace(task=task, config=config, student=student)  # what answers.questions reads
    outputs, gold = ask(student, student_dir, questions(context, test))
    return write_predictions(task, test, outputs, gold, run_dir / "refits" / f"test_predictions_{name}.jsonl")


def _average(scratch: Path, seeds: list[int]) -> Path:
    """A student whose weights are the mean of the seeds' students' (same base, same shapes)."""
    from safetensors.torch import load_file, save_file

    if not (scratch / str(seeds[0]) / "model.safetensors").is_file():
        raise SystemExit("--soup averages full fine-tunes (model.safetensors); this run trained LoRA adapters")
    states = [load_file(scratch / str(seed) / "model.safetensors") for seed in seeds]
    mean = {key: (sum(state[key].float() for state in states) / len(states)).to(states[0][key].dtype)
            for key in states[0]}
    out = scratch / "soup"
    shutil.copytree(scratch / str(seeds[0]), out)
    save_file(mean, out / "model.safetensors", metadata={"format": "pt"})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="finished run directories")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per run, the run's own included")
    parser.add_argument("--soup", action="store_true", help="also test the average of the seeds' weights")
    parser.add_argument("--reuse-own", action="store_true", help="take the run's own accuracy for its own seed "
                        "instead of retraining it (not with --soup)")
    args = parser.parse_args()
    if args.reuse_own and args.soup:
        parser.error("--reuse-own: a soup needs the own seed's student; leave one of them out")
    if args.seeds < 2:
        parser.error("--seeds: at least 2 (the run's own and another), or there is no spread to measure")
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    table = Table("run", "iteration", "run's test", "per seed", "mean", "soup" if args.soup else "")
    within = defaultdict(list)  # row directory → [(mean, variance over seeds)]
    for run_dir in args.runs:
        done = refit(run_dir, args.seeds, args.soup, args.reuse_own)
        accuracies = [100 * done["seeds"][str(s)] for s in sorted(done["seeds"], key=int)][: args.seeds]
        own = 100 * done["run_accuracy"]
        mark = "" if abs(accuracies[0] - own) < 1e-6 else " (not reproduced)"
        soup = 100 * done["soup"]["test_accuracy"] if args.soup else None
        table.add_row(f"{run_dir.parent.name}/{run_dir.name}", str(done["iteration"]), f"{own:.1f}{mark}",
                      ", ".join(f"{a:.1f}" for a in accuracies),
                      f"{statistics.mean(accuracies):.1f}", "" if soup is None else f"{soup:.1f}")
        within[str(run_dir.parent)].append((statistics.mean(accuracies), statistics.variance(accuracies)))
    console.print(table)
    if args.reuse_own:
        console.print("--reuse-own: each run's first seed is its own, its accuracy the run's (retrained only where an "
                      "earlier refit without --reuse-own did)", highlight=False)
    for row, runs in within.items():
        pooled = statistics.mean(variance for _, variance in runs) ** 0.5
        console.print(f"{row}: mean over runs and seeds {statistics.mean(m for m, _ in runs):.1f}; one run's standard "
                      f"deviation from the training seed alone (pooled over {len(runs)} runs) {pooled:.1f} points",
                      highlight=False)


if __name__ == "__main__":
    main()
