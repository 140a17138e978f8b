"""A finished run, as `export` and `predict` take something from it: the run directory checked, the iteration to take
(the run's best by out-of-fold accuracy, else its last; never chosen by test accuracy), that iteration's student,
and the task rebuilt from the run's own seed rows (so the seed file may have moved since)."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from llm2llm.config import Config
from llm2llm.data import Example, read_examples
from llm2llm.errors import RunStateError
from llm2llm.runstore import RunStore
from llm2llm.tasks import Task, build_task


class Chosen(NamedTuple):
    iteration: int
    why: str  # how it was chosen, for messages and cards: "the run's best iteration by out-of-fold accuracy (81.2%)"


def finished_run(run_dir: Path) -> RunStore:
    """The run in run_dir, finished; RunStateError naming the directory (and what to run) otherwise."""
    path = Path(run_dir)
    if not path.is_dir():
        raise RunStateError(f"{path}: no such directory; give a run directory, e.g. runs/demo")
    if not (path / "config.yaml").is_file():
        runs = sorted(path.glob("*/*/config.yaml"))
        hint = f"; it holds `llm2llm compare` runs: give one of them, e.g. {runs[0].parent}" if runs else ""
        raise RunStateError(f"{path} is not a run directory (no config.yaml){hint}")
    store = RunStore(path)
    store.config()  # a frozen config this version cannot read is named here, not half-way through an export
    state = store.state()
    if not state.get("finished"):
        reason = state.get("stop_reason") or "in progress, or interrupted"
        raise RunStateError(f"{path}: the run has not finished ({reason}); finish it first with "
                            f"`llm2llm run {path / 'config.yaml'}`")
    return store


def chosen_iteration(store: RunStore, requested: int | None = None) -> Chosen:
    """The iteration asked for, else the run's best (by out-of-fold accuracy), else its last trained one."""
    state = store.state()
    trained = sorted(int(i) for i, stages in state["iterations"].items() if "finetune" in stages)
    if not trained:
        raise RunStateError(f"{store.root}: no iteration was trained")
    if requested is not None:
        if requested not in trained:
            raise RunStateError(f"{store.root}: iteration {requested} was not trained (trained: "
                                f"{', '.join(map(str, trained))}); choose one of them with --iteration")
        return Chosen(requested, f"iteration {requested}, as asked")
    best = store.best_iteration()  # derived from the stages' records, like compare and the report
    if best:
        return Chosen(best["iteration"], f"the run's best iteration by out-of-fold accuracy ({best['oof_accuracy']:.1%})")
    return Chosen(trained[-1], f"the run's last iteration ({trained[-1]})")


def student_dir(store: RunStore, iteration: int, alternative: str = "") -> Path:
    """The iteration's saved student (weights or a LoRA adapter); RunStateError when it was deleted or never saved,
    saying which iterations have one, and `alternative` (what else the command can do without one)."""
    path = store.root / f"iter_{iteration:03d}" / "student"
    if _has_weights(path):
        return path
    keep = store.config().student.keep_checkpoints
    kept = [i for i in store.iterations() if _has_weights(store.root / f"iter_{i:03d}" / "student")]
    where = f"iterations with one: {', '.join(map(str, kept))} (--iteration)" if kept else "no iteration has one"
    raise RunStateError(f"{path}: no student weights (deleted by student.keep_checkpoints={keep} or by `compare`, or never "
                        f"saved); {where}; {alternative}or run again with student.keep_checkpoints=all")


def _has_weights(student: Path) -> bool:
    """A saved model (config.json) or LoRA adapter (adapter_config.json) is in the folder."""
    return (student / "config.json").is_file() or (student / "adapter_config.json").is_file()


def run_seeds(store: RunStore) -> list[Example]:
    """The run's seed set D_0, as iteration 0 holds it."""
    path = store.root / "iter_000" / "train.jsonl"
    if not path.is_file():
        raise RunStateError(f"{path}: missing; the run directory is incomplete")
    return [example for example in read_examples(path) if example.origin == "seed"]


def run_task(store: RunStore, config: Config) -> Task:
    """The run's task, built from its own seed rows (classification takes its labels from them)."""
    return build_task(config.task, run_seeds(store))
