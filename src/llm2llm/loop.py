"""The LLM2LLM loop (Lee et al., 2024, Algorithm 1), top to bottom, every stage resumable.

    D_0 = the seed set (a baseline, augment.method, adds its own examples here and trains once)
    for i in 0..n-1:
        1. Finetune  a fresh student from the base weights on D_i
        2. Evaluate  it on the seed set D_0 only (scoring the known answers, or greedy decoding)
        3. Select    the seed examples to write from (select.by): wrong out of fold (the default: k students each
                     trained without a fold of seeds and their descendants; select.with_train_errors adds those
                     wrong after training), wrong after training (the paper), or least confident; with select.spread
                     the same number of requests is dealt over the labels
        4. Generate  new examples from each selected *seed* example with the teacher (6 a seed in the seed's form by
                     default, 1 in new wording in the paper's loop); validate, drop near-duplicates and test-set
                     look-alikes, and keep what a blind verifier confirms
        5. Append    D_{i+1} = D_i + accepted
    and evaluate on the test set (each iteration if asked, the last one always).

The paper's ablations are switches: student.continue_training (Table 5), augment.one_shot (Table 4),
augment.source=all (Table 6); its loop is select.by=train_errors (config.Config._paper_or_ours). The last
iteration does not generate: no student would be trained on that data. With out-of-fold selection every iteration
gets an accuracy estimate that needs no test set; the stopping rule reads it, and the run names its best iteration by
it. A stage whose done-marker is in state.json is skipped on a re-run; one that died half-way is redone, its teacher
calls coming from the cache.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from llm2llm.answers import ask, questions, write_predictions
from llm2llm.augment.baselines import baseline_examples
from llm2llm.config import Config, file_columns
from llm2llm.context import RunContext
from llm2llm.data import Example, load_examples, read_examples, read_jsonl, write_jsonl
from llm2llm.distributed import Apart, join
from llm2llm.errors import BudgetReached, RunStateError
from llm2llm.generate import teacher_examples
from llm2llm.preflight import preflight
from llm2llm.progress import SilentUI
from llm2llm.runstore import RunStore
from llm2llm.select import choose_with_requests, stratified_folds, summary, without_fold
from llm2llm.students import Student, build_student
from llm2llm.tasks import Task, build_task
from llm2llm.teachers import ReplyCache, Teacher, build_teacher
from llm2llm.tracking import tracking


def run(config: Config, *, force: bool = False, ui=None, student: Student | None = None, teacher: Teacher | None = None) -> RunStore:
    """Set up a run from its config (or resume it) and run the loop. Parts can be passed in (tests, notebooks).

    Under `accelerate launch` (distributed.py) only the main process runs the loop, writes the run directory and asks
    the teacher; the other processes train and predict with it, on its word, and write nothing."""
    store = RunStore(config.run_dir)
    team = join()
    if not team.is_main:
        team.serve(student or build_student(config.student, config.seed))
        team.leave()
        return store
    seeds, test, task = load_data(config)
    seeds, test = preflight(config, task, seeds, test, student=student, teacher=teacher)  # in seconds, nothing written yet
    with store.lock():  # one writer per run directory
        store.open(config, force=force)
        teacher = teacher or build_teacher(config.teacher, config.seed)
        verifier = build_teacher(config.quality.verifier, config.seed, "quality.verifier") if config.quality.verifier else teacher
        shared = team.lead(student or build_student(config.student, config.seed), config.student.folds_side_by_side)
        context = RunContext(config, store, task, shared, teacher, verifier, ReplyCache(store.cache_path), seeds, test,
                             ui or SilentUI())
        try:
            with tracking(config, store):  # report_to: each stage's metrics go to the trackers as it finishes
                llm2llm(context)
        finally:
            teacher.close()
            if verifier is not teacher:
                verifier.close()
            context.cache.close()
    team.dismiss()  # only after success: a helper left inside a failed step is stopped by the launcher instead
    team.leave()
    return store


def load_data(config: Config) -> tuple[list[Example], list[Example], Task]:
    """The seed set, the test set and the task built from them, all validated."""
    data = config.data
    seeds = load_examples(data.seed_path, **file_columns(data), hf_subset=data.hf_subset, origin="seed", limit=data.seed_limit)
    test = load_examples(data.test_path, **file_columns(data, data.test_columns), hf_subset=data.hf_subset, origin="test",
                         limit=data.test_limit) if data.test_path else []
    task = build_task(config.task, seeds)
    task.validate(test)
    return seeds, test, task


def llm2llm(run: RunContext) -> None:
    config, store, task, student, seeds, ui = run.config, run.store, run.task, run.student, run.seeds, run.ui
    n, augment = config.loop.iterations, config.augment
    store.set_finished(False)
    first_train = store.iter_dir(0) / "train.jsonl"
    # ── 0. D_0 is the seed set; a baseline (augment.method) adds the examples it makes without the loop ──────
    if augment.method != "llm2llm" and not store.done(0, "augment"):
        _check_budget(config, store)
        started = time.perf_counter()
        added, info = baseline_examples(run, store.iter_dir(0))
        write_jsonl(first_train, seeds + added)
        store.mark_done(0, "augment", {**info, "seconds": _since(started)})
    elif not first_train.is_file():
        write_jsonl(first_train, seeds)
    elif [e.id for e in read_examples(first_train) if e.origin == "seed"] != [e.id for e in seeds]:
        raise RunStateError(
            f"the seed file {config.data.seed_path} changed since {store.root} started (its D_0 differs); "
            "restore it or start a new run with another name="
        )
    for i in range(n):
        it = store.iter_dir(i)
        train_set = read_examples(it / "train.jsonl")
        ui.log(f"[bold cyan]── iteration {i}[/] · |D_{i}| = {len(train_set)}")

        # ── 1. Finetune: a fresh student from the base weights on D_i (paper §3.1; not continued) ──
        if not store.done(i, "finetune"):
            started = time.perf_counter()
            # The continued-training ablation (paper Table 5) starts from the previous iteration's student instead.
            init_from = store.iter_dir(i - 1) / "student" if config.student.continue_training and i > 0 else None
            stats = _finetune(run, train_set, it / "student", f"finetune {i}", init_from)
            store.mark_done(i, "finetune", {**stats, "seconds": _since(started)})

        # ── 2. Evaluate on the seed set D_0 only ───────────────────────────────────────────────────
        if not store.done(i, "evaluate"):
            started = time.perf_counter()
            accuracy = _evaluate(run, it / "student", seeds, it / "seed_predictions.jsonl", f"evaluate seeds {i}")
            info = {"seed_accuracy": accuracy, "seeds": len(seeds)}
            generated = train_set[len(seeds):]
            if augment.source == "all" and generated:  # ablation (paper Table 6): generated examples can be parents too
                info["generated_accuracy"] = _evaluate(run, it / "student", generated, it / "generated_predictions.jsonl",
                                                       f"evaluate generated {i}")
            store.mark_done(i, "evaluate", {**info, "seconds": _since(started)})
        ui.log(f"   seed accuracy {store.info(i, 'evaluate')['seed_accuracy']:.1%}")

        # ── 3. Select the seed examples to write from: wrong on the seeds (the paper), wrong out of fold, unsure ──
        if _uses_folds(config) and augment.method == "llm2llm" and (i < n - 1 or config.select.estimate_every_iteration):
            _fold_predictions(run, i, train_set)
        if not store.done(i, "select"):
            store.mark_done(i, "select", _select(run, i, train_set))
        parents = read_examples(it / "wrong.jsonl")
        if "oof_accuracy" in store.info(i, "select"):
            ui.log(f"   out-of-fold accuracy {store.info(i, 'select')['oof_accuracy']:.1%}")

        stop_reason = f"completed {n} iterations" if i == n - 1 else _early_stop(config, store, i, parents)
        last = stop_reason is not None
        if run.test and (last or config.eval.test_every_iteration) and not store.done(i, "test"):
            started = time.perf_counter()
            accuracy = _evaluate(run, it / "student", run.test, it / "test_predictions.jsonl", f"evaluate test {i}")
            store.mark_done(i, "test", {"test_accuracy": accuracy, "test_examples": len(run.test), "seconds": _since(started)})
        if store.done(i, "test"):
            ui.log(f"   test accuracy {store.info(i, 'test')['test_accuracy']:.1%}")
        _prune_students(config, store, i)
        if last:
            break

        # ── 4. Generate from the selected *seed* examples only; validate, de-duplicate, verify ───────
        # Seeds only: the paper's ablation (Table 6, augment.source=all here) shows generating from generated data hurts.
        if not store.done(i, "generate"):
            _check_budget(config, store)
            started = time.perf_counter()
            count = augment.count if augment.one_shot else None  # one-shot (paper Table 4): everything at once
            selection = read_jsonl(it / "selection.jsonl")
            answers = {row["id"]: row.get("answer") for row in selection}  # what the student said
            requests = {row["id"]: row["requests"] for row in selection if "requests" in row}  # select.spread
            info = teacher_examples(run, it, i, parents, train_set, count=count, student_answers=answers, requests=requests)
            store.mark_done(i, "generate", {**info, "seconds": _since(started)})
        info = store.info(i, "generate")
        ui.log(f"   parents {len(parents)} → accepted {info['accepted']}, rejected {info['rejected']} {info['rejected_by_reason'] or ''}")

        # ── 5. Append: D_{i+1} = D_i + accepted ──────────────────────────────────────────────────
        if not store.done(i, "append"):
            next_train = train_set + read_examples(it / "generated.jsonl")
            write_jsonl(store.iter_dir(i + 1) / "train.jsonl", next_train)
            store.mark_done(i, "append", {"next_train_size": len(next_train)})
    store.set_finished(True, stop_reason, store.best_iteration())


def _select(run: RunContext, i: int, train_set: list[Example]) -> dict:
    """Write the parents (wrong.jsonl) and why each was chosen (selection.jsonl); return the stage's metrics."""
    config, seeds, it = run.config, run.seeds, run.store.iter_dir(i)
    out_of_fold = run.store.done(i, "fold_0")
    trained = predictions = {row["id"]: row for row in read_jsonl(it / "seed_predictions.jsonl")}
    if out_of_fold:  # every seed's prediction by the student that never saw it (or anything made from it)
        predictions = {row["id"]: row for path in sorted((it / "folds").glob("fold_*.jsonl")) for row in read_jsonl(path)}
    # A last iteration without folds (select.estimate_every_iteration=false) selects nothing: nothing is generated.
    # requests: parent id → teacher requests where select.spread dealt them (else teacher.samples_per_wrong each)
    chosen, requests = ([], {}) if _uses_folds(config) and not out_of_fold else choose_with_requests(
        config.select, seeds, predictions, config.teacher.samples_per_wrong, trained)
    # what the student said (shown to the teacher): for a seed wrong only after training, the trained student's answer
    said = {**predictions, **{e.id: trained[e.id] for e, reason in chosen if reason == "wrong_after_training"}}
    if (it / "generated_predictions.jsonl").is_file():  # augment.source=all: wrong generated examples are parents too
        by_id = {e.id: e for e in train_set}
        chosen += [(by_id[row["id"]], "wrong") for row in read_jsonl(it / "generated_predictions.jsonl") if not row["correct"]]
    write_jsonl(it / "wrong.jsonl", [example for example, _ in chosen])
    write_jsonl(it / "selection.jsonl", [
        {"id": e.id, "label": e.label, "reason": reason, **({"requests": requests[e.id]} if e.id in requests else {}),
         **{key: said[e.id][key] for key in ("answer", "gold_logprob") if key in said.get(e.id, {})}}
        for e, reason in chosen])
    info = {"oof_accuracy": sum(row["correct"] for row in predictions.values()) / len(seeds)} if out_of_fold else {}
    return {**info, "wrong": sum(1 for _, reason in chosen if reason == "wrong"), "parents": len(chosen),
            "parents_by_reason": summary(chosen)}


def _uses_folds(config: Config) -> bool:
    return config.select.by in ("out_of_fold", "out_of_fold+confidence")


def _finetune(run: RunContext, train_set: list[Example], out_dir: Path, title: str, init_from: Path | None = None) -> dict:
    pairs = _pairs(run, train_set)
    with run.ui.stage(title, total=run.student.train_steps(len(pairs))) as advance:
        return run.student.train(pairs, out_dir, advance, init_from=init_from)


def _pairs(run: RunContext, examples: list[Example]) -> list[tuple[list[dict[str, str]], str]]:
    """What the student trains on: the task's prompt messages and target for each example."""
    return [(run.task.student_messages(example), run.task.target(example)) for example in examples]


def _fold_predictions(run: RunContext, i: int, train_set: list[Example]) -> None:
    """Each fold's student: trained from the base weights on D_i without the fold's seeds and their descendants, it
    predicts the held-out seeds (iter_i/folds/fold_j.jsonl). A fold is a stage of its own; its weights are deleted.
    With several processes (distributed.py) a full round of folds trains side by side, one per process."""
    store = run.store
    folds = stratified_folds(run.seeds, run.config.select.folds, run.config.seed)
    pending = [j for j in range(len(folds)) if not store.done(i, f"fold_{j}")]
    width = getattr(run.student, "side_by_side", 1)  # students the processes can train at once, one each
    for start in range(0, len(pending), width):
        group = pending[start : start + width]
        if len(group) == width > 1:
            _folds_side_by_side(run, i, train_set, folds, group)
        else:  # one at a time: a lone fold trains across all processes, faster than on one of them
            for j in group:
                _fold(run, i, train_set, folds, j)
    if pending and hasattr(run.student, "release"):
        run.student.release()  # the iteration's own student is reloaded from disk for the test set


def _fold(run: RunContext, i: int, train_set: list[Example], folds: list[list[str]], j: int) -> None:
    it = run.store.iter_dir(i)
    started = time.perf_counter()
    subset = without_fold(train_set, set(folds[j]))
    student_dir = it / "folds" / f"fold_{j}"
    title = f"fold {j + 1}/{len(folds)} of iteration {i}"
    _finetune(run, subset, student_dir, f"finetune {title}")
    held = [seed for seed in run.seeds if seed.id in set(folds[j])]
    accuracy = _evaluate(run, student_dir, held, it / "folds" / f"fold_{j}.jsonl", f"evaluate {title}")
    shutil.rmtree(student_dir, ignore_errors=True)  # used once; a killed fold trains again
    run.store.mark_done(i, f"fold_{j}", {"held_out": len(held), "fold_train_examples": len(subset), "fold_accuracy": accuracy,
                                         "seconds": _since(started)})


def _folds_side_by_side(run: RunContext, i: int, train_set: list[Example], folds: list[list[str]], group: list[int]) -> None:
    """Folds trained at the same time, each by one process on its own device, exactly as one after another would
    (the same seed, batches and code). Each fold's `seconds` is its share of the wall time, `own_seconds` what it took
    on its process: their difference is the time saved (metrics.json: folds_side_by_side)."""
    it = run.store.iter_dir(i)
    started = time.perf_counter()
    held = {j: [seed for seed in run.seeds if seed.id in set(folds[j])] for j in group}
    subsets = {j: without_fold(train_set, set(folds[j])) for j in group}
    jobs = [Apart(pairs=_pairs(run, subsets[j]), student_dir=it / "folds" / f"fold_{j}", questions=questions(run, held[j]))
            for j in group]
    title = f"folds {', '.join(str(j + 1) for j in group)}/{len(folds)} of iteration {i}, side by side"
    with run.ui.stage(f"finetune and evaluate {title}", total=run.student.train_steps(len(jobs[0].pairs))) as advance:
        answers = run.student.train_apart(jobs, advance)
    share = _since(started) / len(group)
    for j, job, answer in zip(group, jobs, answers):
        accuracy = write_predictions(run.task, held[j], answer.outputs, answer.gold, it / "folds" / f"fold_{j}.jsonl")
        shutil.rmtree(job.student_dir, ignore_errors=True)
        run.store.mark_done(i, f"fold_{j}", {"held_out": len(held[j]), "fold_train_examples": len(subsets[j]),
                                             "fold_accuracy": accuracy, "process": answer.process,
                                             "own_seconds": answer.seconds, "seconds": round(share, 2)})


def _evaluate(run: RunContext, student_dir: Path, examples: list[Example], path: Path, title: str) -> float:
    """Predict the examples with the student in student_dir; write id, output, answer, correct and the log-probability
    of the gold answer (when scored, or needed for confidence selection) to path; return the accuracy."""
    with run.ui.stage(title, total=len(examples)) as advance:
        outputs, gold = ask(run.student, student_dir, questions(run, examples), advance)
    return write_predictions(run.task, examples, outputs, gold, path)


def _check_budget(config: Config, store: RunStore) -> None:
    """Stop at this stage boundary, everything saved, once the teacher budget is spent."""
    spent = [store.metrics(j) for j in store.iterations()]
    tokens = sum(m.get("teacher_prompt_tokens", 0) + m.get("teacher_completion_tokens", 0) for m in spent)
    cost = sum(m.get("teacher_cost") or 0 for m in spent)
    budget = config.budget
    for name, used, cap in (("max_teacher_tokens", tokens, budget.max_teacher_tokens), ("max_cost", cost, budget.max_cost)):
        if cap is not None and used >= cap:
            reason = f"teacher budget reached: {used:,.4g} spent, budget.{name}={cap:,}"
            store.set_finished(False, reason)
            raise BudgetReached(f"{reason}. Everything so far is saved in {store.root}; raise budget.{name} and run the same command to continue.")


def _early_stop(config: Config, store: RunStore, i: int, parents: list[Example]) -> str | None:
    """Why the loop should end after iteration i (its test evaluation still runs), or None to go on. Patience reads
    the out-of-fold accuracy where there is one (an honest estimate), else the seed accuracy."""
    if not parents:
        why = {"train_errors": "no seed example is wrong", "out_of_fold": "no seed example is wrong when held out"}
        why = why.get(config.select.by, f"select.by={config.select.by} chose no seed example")
        return f"stopped after iteration {i}: {why}, so there is nothing to augment"
    key, name = ("oof_accuracy", "out-of-fold accuracy") if "oof_accuracy" in store.info(i, "select") else ("seed_accuracy", "seed accuracy")
    accuracies = [(store.info(j, "select") if key == "oof_accuracy" else store.info(j, "evaluate")).get(key, 0.0) for j in range(i + 1)]
    patience = config.loop.patience
    if patience and i >= patience and max(accuracies[-patience:]) <= max(accuracies[:-patience]):
        best = max(accuracies)
        return f"stopped after iteration {i}: {name} has not improved on {best:.1%} for {patience} iterations (loop.patience)"
    return None


def _prune_students(config: Config, store: RunStore, iteration: int) -> None:
    """keep_checkpoints=last keeps the latest student and the best one (by out-of-fold accuracy) so far."""
    keep = config.student.keep_checkpoints
    best = store.best_iteration()
    if keep == "last":
        for earlier in range(iteration):
            if best is None or earlier != best["iteration"]:
                store.prune_student(earlier)
    elif keep == "none":
        store.prune_student(iteration)


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 2)
