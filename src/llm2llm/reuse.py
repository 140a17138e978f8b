"""Runs that share their first iteration: a new run starts from another run's finished iteration 0.

The `finetune` baseline of `llm2llm compare` is exactly iteration 0 of the `llm2llm` loop (the same seed, seed set
and student recipe, fine-tuned and scored the same way), and so is iteration 0 of the one-shot, continued-training
and generated-parents ablations. Training it once per repeat instead of once per method saves about a third of a
comparison's time. The result is also paired, as in the paper, where iteration 0 is the fine-tuning baseline.

A donor's iteration-0 stage markers and files are copied into the new run (the student hard-linked, not copied),
each marker noting `reused_from`; the loop then skips those stages like any finished stage on resume. Where both
runs select out of fold with as many folds, iteration 0's fold predictions come along too (k fine-tunes saved);
how a run chooses parents from them (select.*) is its own.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from pydantic import ValidationError

from llm2llm.config import Config
from llm2llm.data import content_hash
from llm2llm.errors import RunStateError
from llm2llm.runstore import RESUMABLE_CHANGES, RunStore, flatten

# Keys that do not change what iteration 0 trains or how it scores the seeds and the test set: what comes after it
# (loop length, teacher, checks, budget, the llm2llm method's augment switches, continued training from iteration 1
# on, how selection uses the predictions) and where or how fast a run goes (RESUMABLE_CHANGES). Of select.by only
# whether it reads confidence counts: that makes a generated evaluation record the gold answer's log-probability too.
_AFTER_ITERATION_0 = ("loop.", "teacher.", "quality.", "budget.", "augment.", "student.continue_training", "select.",
                      "task.teacher_")
_IGNORED = RESUMABLE_CHANGES | {"name", "output_dir"}
_STAGES = ("finetune", "evaluate", "test")  # iteration 0 up to its test evaluation
_FILES = ("train.jsonl", "seed_predictions.jsonl", "test_predictions.jsonl")


def first_iteration_key(config: Config) -> str | None:
    """Equal for two configs whose iteration 0 is the same experiment; None for a baseline (augment.method other
    than llm2llm), whose single fine-tune sees its own examples too."""
    if config.augment.method != "llm2llm":
        return None
    flat = flatten(config.model_dump(mode="json"))
    kept = {k: v for k, v in flat.items() if k not in _IGNORED and not k.startswith(_AFTER_ITERATION_0)}
    return content_hash({**kept, "reads_confidence": "confidence" in config.select.by})


def start_from_donor(config: Config, donors: Path) -> Path | None:
    """If `config`'s run has not started and a run under `donors` (<label>/<run>/) finished the same iteration 0,
    copy that iteration into it and return the donor's directory; otherwise change nothing and return None."""
    target = RunStore(config.run_dir)
    key = first_iteration_key(config)
    if key is None or (target.root / "state.json").exists():
        return None
    eligible = []  # (donor, has_student, folds it can give)
    for state_file in sorted(donors.glob("*/*/state.json")):
        donor = RunStore(state_file.parent)
        first = donor.state().get("iterations", {}).get("0", {})
        if donor.root == target.root or not {"finetune", "evaluate"} <= set(first):
            continue
        try:
            donor_config = donor.config()
            if first_iteration_key(donor_config) != key:
                continue
        except (RunStateError, ValidationError):  # not a run, or one frozen by a version with other keys
            continue
        student = donor.root / "iter_000" / "student"
        has_student = (student / "config.json").is_file() or (student / "adapter_config.json").is_file()
        if needs_student(config, first) and not has_student:
            continue
        folds = sum(stage.startswith("fold_") for stage in first) if _same_folds(config, donor_config) else 0
        eligible.append((donor, has_student, folds))
    if not eligible:
        return None
    donor, has_student, folds = max(eligible, key=lambda entry: entry[2])  # the first of those that save the most
    _copy_first_iteration(donor, target, has_student, folds=folds > 0)
    return donor.root


def needs_student(config: Config, first: dict) -> bool:
    """Whether the run will still use iteration 0's weights after its seed evaluation: to test them (when the donor did
    not), to continue training from them, or to keep them (all of them, or the best by out-of-fold accuracy, which may
    be iteration 0's). A stage added after `evaluate` that loads the iteration-0 student belongs here too."""
    # It tests iteration 0 when that is its last: always for one iteration, maybe when no seed is wrong, or when
    # another selection than the paper's finds no parent.
    tests_iteration_0 = bool(config.data.test_path) and (
        config.loop.iterations == 1 or config.eval.test_every_iteration or first["evaluate"].get("seed_accuracy") == 1.0
        or config.select.by != "train_errors")
    keeps_best = "out_of_fold" in config.select.by and config.student.keep_checkpoints != "none"
    return ((tests_iteration_0 and "test" not in first) or config.student.keep_checkpoints == "all" or keeps_best
            or (config.student.continue_training and config.loop.iterations > 1))


def _same_folds(config: Config, donor: Config) -> bool:
    """Whether iteration 0's out-of-fold students are the same experiment too: both train folds, as many. (The
    folds are split by config.seed and train on the seeds alone, which first_iteration_key already pins.)"""
    return all("out_of_fold" in c.select.by for c in (config, donor)) and config.select.folds == donor.select.folds


def _copy_first_iteration(donor: RunStore, target: RunStore, with_student: bool, folds: bool = False) -> None:
    source, destination = donor.root / "iter_000", target.iter_dir(0)
    for name in _FILES:
        if (source / name).is_file() and (name != "test_predictions.jsonl" or donor.done(0, "test")):
            shutil.copy2(source / name, destination / name)
    fold_stages = sorted(stage for stage in donor.state().get("iterations", {}).get("0", {}) if stage.startswith("fold_"))
    if folds and fold_stages:  # out-of-fold predictions of the seeds: k fine-tunes not repeated
        (destination / "folds").mkdir(exist_ok=True)
        for stage in fold_stages:
            shutil.copy2(source / "folds" / f"{stage}.jsonl", destination / "folds" / f"{stage}.jsonl")
            target.mark_done(0, stage, {**donor.info(0, stage), "reused_from": str(donor.root)})
    if with_student:
        # Hard links: the same bytes on disk, and pruning one run's copy leaves the other's.
        shutil.copytree(source / "student", destination / "student", copy_function=_link_or_copy, dirs_exist_ok=True)
    for stage in _STAGES:  # files first, markers last: a marker promises its outputs are there
        if donor.done(0, stage):
            target.mark_done(0, stage, {**donor.info(0, stage), "reused_from": str(donor.root)})


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:  # another file system, or links not supported
        shutil.copy2(source, destination)
