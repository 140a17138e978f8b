"""The LLM2LLM loop (Lee et al., 2024, Algorithm 1), top to bottom, every stage resumable.

    D_0 = the seed set (a baseline, augment.method, adds its own examples here and trains once)
    for i in 0..n-1:
        1. Finetune  a fresh student from the base weights on D_i
        2. Evaluate  it greedily on the seed set D_0 only
        3. Filter    the seed examples it got wrong
        4. Generate  new examples from each wrong *seed* example with the teacher; validate, drop near-duplicates
                     and test-set look-alikes, and keep what a blind verifier confirms
        5. Append    D_{i+1} = D_i + accepted
    and evaluate on the test set (each iteration if asked, the last one always).

The paper's ablations are switches: student.continue_training (Table 5), augment.one_shot (Table 4),
augment.source=all (Table 6). The last iteration does not generate: no student would be trained on that data.
A stage whose done-marker is in state.json is skipped on a re-run; one that died half-way is redone, its
teacher calls coming from the cache.
"""

from __future__ import annotations

import time
from pathlib import Path

from llm2llm.augment.baselines import baseline_examples
from llm2llm.augment.teacher import teacher_examples
from llm2llm.config import Config
from llm2llm.data import Example, load_examples, read_examples, read_jsonl, write_jsonl
from llm2llm.errors import BudgetReached, RunStateError
from llm2llm.progress import SilentUI
from llm2llm.runstore import RunStore
from llm2llm.students import Student, build_student
from llm2llm.tasks import Task, build_task
from llm2llm.teachers import ReplyCache, Teacher, build_teacher


def run(config: Config, *, force: bool = False, ui=None, student: Student | None = None, teacher: Teacher | None = None) -> RunStore:
    """Set up a run from its config (or resume it) and run the loop. Parts can be passed in (tests, notebooks)."""
    ui = ui or SilentUI()
    store = RunStore(config.run_dir)
    seeds, test, task = load_data(config)
    store.open(config, force=force)
    student = student or build_student(config.student, config.seed)
    teacher = teacher or build_teacher(config.teacher, config.seed)
    verifier = build_teacher(config.quality.verifier, config.seed) if config.quality.verifier else teacher
    cache = ReplyCache(store.cache_path)
    try:
        llm2llm(config, store, task, student, teacher, verifier, cache, seeds, test, ui)
    finally:
        teacher.close()
        if verifier is not teacher:
            verifier.close()
        cache.close()
    return store


def load_data(config: Config) -> tuple[list[Example], list[Example], Task]:
    """The seed set, the test set and the task built from them, all validated."""
    data = config.data
    columns = {"text_field": data.text_field, "label_field": data.label_field, "choices_field": data.choices_field, "id_field": data.id_field,
               "hf_subset": data.hf_subset}
    seeds = load_examples(data.seed_path, **columns, origin="seed", limit=data.seed_limit)
    test = load_examples(data.test_path, **columns, origin="test", limit=data.test_limit) if data.test_path else []
    task = build_task(config.task, seeds)
    task.validate(test)
    return seeds, test, task


def llm2llm(config: Config, store: RunStore, task: Task, student: Student, teacher: Teacher, verifier: Teacher, cache: ReplyCache,
            seeds: list[Example], test: list[Example], ui) -> None:
    n, augment = config.loop.iterations, config.augment
    store.set_finished(False)
    first_train = store.iter_dir(0) / "train.jsonl"
    # ── 0. D_0 is the seed set; a baseline (augment.method) adds the examples it makes without the loop ──────
    if augment.method != "llm2llm" and not store.done(0, "augment"):
        _check_budget(config, store)
        started = time.perf_counter()
        added, info = baseline_examples(config, task, teacher, verifier, cache, store.iter_dir(0), seeds, test, ui)
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
            pairs = [(task.student_messages(example), task.target(example)) for example in train_set]
            # The continued-training ablation (paper Table 5) starts from the previous iteration's student instead.
            init_from = store.iter_dir(i - 1) / "student" if config.student.continue_training and i > 0 else None
            with ui.stage(f"finetune {i}", total=student.train_steps(len(pairs))) as advance:
                stats = student.train(pairs, it / "student", advance, init_from=init_from)
            store.mark_done(i, "finetune", {**stats, "seconds": _since(started)})

        # ── 2. Evaluate on the seed set D_0 only, greedily ───────────────────────────────────────
        if not store.done(i, "evaluate"):
            started = time.perf_counter()
            accuracy = _evaluate(task, student, it, seeds, "seed_predictions.jsonl", f"evaluate seeds {i}", ui)
            info = {"seed_accuracy": accuracy, "seeds": len(seeds)}
            generated = train_set[len(seeds):]
            if augment.source == "all" and generated:  # ablation (paper Table 6): generated examples can be parents too
                info["generated_accuracy"] = _evaluate(task, student, it, generated, "generated_predictions.jsonl", f"evaluate generated {i}", ui)
            store.mark_done(i, "evaluate", {**info, "seconds": _since(started)})
        ui.log(f"   seed accuracy {store.info(i, 'evaluate')['seed_accuracy']:.1%}")

        stop_reason = _early_stop(config, store, i) or (f"completed {n} iterations" if i == n - 1 else None)
        last = stop_reason is not None
        if test and (last or config.eval.test_every_iteration) and not store.done(i, "test"):
            started = time.perf_counter()
            accuracy = _evaluate(task, student, it, test, "test_predictions.jsonl", f"evaluate test {i}", ui)
            store.mark_done(i, "test", {"test_accuracy": accuracy, "test_examples": len(test), "seconds": _since(started)})
        if store.done(i, "test"):
            ui.log(f"   test accuracy {store.info(i, 'test')['test_accuracy']:.1%}")
        _prune_students(config, store, i)
        if last:
            break

        # ── 3. Filter: keep the seed examples the student got wrong ──────────────────────────────
        if not store.done(i, "filter"):
            evaluated = {e.id: e for e in seeds + train_set[len(seeds):]}
            predictions = read_jsonl(it / "seed_predictions.jsonl")
            if (it / "generated_predictions.jsonl").is_file():
                predictions += read_jsonl(it / "generated_predictions.jsonl")
            wrong_examples = [evaluated[row["id"]] for row in predictions if not row["correct"]]
            write_jsonl(it / "wrong.jsonl", wrong_examples)
            store.mark_done(i, "filter", {"wrong": len(wrong_examples)})
        wrong_examples = read_examples(it / "wrong.jsonl")

        # ── 4. Generate from the wrong *seed* examples only; validate and de-duplicate ───────────
        # Seeds only: the paper's ablation (Table 6, augment.source=all here) shows generating from generated data hurts.
        if not store.done(i, "generate"):
            _check_budget(config, store)
            started = time.perf_counter()
            count = augment.count if augment.one_shot else None  # one-shot (paper Table 4): everything at once
            info = teacher_examples(config, task, teacher, verifier, cache, it, i, wrong_examples, seeds, train_set, test, ui, count=count)
            store.mark_done(i, "generate", {**info, "seconds": _since(started)})
        info = store.info(i, "generate")
        ui.log(f"   wrong {len(wrong_examples)} → accepted {info['accepted']}, rejected {info['rejected']} {info['rejected_by_reason'] or ''}")

        # ── 5. Append: D_{i+1} = D_i + accepted ──────────────────────────────────────────────────
        if not store.done(i, "append"):
            next_train = train_set + read_examples(it / "generated.jsonl")
            write_jsonl(store.iter_dir(i + 1) / "train.jsonl", next_train)
            store.mark_done(i, "append", {"next_train_size": len(next_train)})
    store.set_finished(True, stop_reason)


def _evaluate(task: Task, student: Student, it: Path, examples: list[Example], filename: str, title: str, ui) -> float:
    with ui.stage(title, total=len(examples)) as advance:
        outputs = student.predict(it / "student", [task.student_messages(e) for e in examples], task.max_new_tokens, advance)
    rows = [
        {"id": e.id, "output": output, "answer": task.extract_answer(output), "label": e.label, "correct": task.is_correct(e, output)}
        for e, output in zip(examples, outputs)
    ]
    write_jsonl(it / filename, rows)
    return sum(row["correct"] for row in rows) / len(rows)


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


def _early_stop(config: Config, store: RunStore, i: int) -> str | None:
    """Why the loop should end after iteration i (its test evaluation still runs), or None to go on."""
    accuracies = [store.info(j, "evaluate")["seed_accuracy"] for j in range(i + 1)]
    if accuracies[-1] == 1.0:
        return f"stopped after iteration {i}: no seed example is wrong, so there is nothing to augment"
    patience = config.loop.patience
    if patience and i >= patience and max(accuracies[-patience:]) <= max(accuracies[:-patience]):
        best = max(accuracies)
        return f"stopped after iteration {i}: seed accuracy has not improved on {best:.1%} for {patience} iterations (loop.patience)"
    return None


def _prune_students(config: Config, store: RunStore, iteration: int) -> None:
    keep = config.student.keep_checkpoints
    if keep == "last" and iteration > 0:
        store.prune_student(iteration - 1)
    elif keep == "none":
        store.prune_student(iteration)


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 2)
