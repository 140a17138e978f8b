"""The LLM2LLM loop (Lee et al., 2024, Algorithm 1), top to bottom, every stage resumable.

    for i in 0..n-1:
        1. Finetune  a fresh student from the base weights on D_i
        2. Evaluate  it greedily on the seed set D_0 only
        3. Filter    the seed examples it got wrong
        4. Generate  new examples from each wrong *seed* example with the teacher; validate, de-duplicate
        5. Append    D_{i+1} = D_i + accepted
    and evaluate on the test set (each iteration if asked, the last one always).

The last iteration does not generate: no student would be trained on that data. A stage whose done-marker is
in state.json is skipped on a re-run; one that died half-way is redone, its teacher calls coming from the cache.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from llm2llm.config import Config
from llm2llm.data import Example, load_examples, read_examples, read_jsonl, write_jsonl
from llm2llm.errors import RunStateError
from llm2llm.progress import SilentUI
from llm2llm.runstore import RunStore
from llm2llm.students import Student, build_student
from llm2llm.tasks import Rejected, Task, build_task
from llm2llm.teachers import ReplyCache, Teacher, TeacherRequest, build_teacher, generate


def run(config: Config, *, force: bool = False, ui=None, student: Student | None = None, teacher: Teacher | None = None) -> RunStore:
    """Set up a run from its config (or resume it) and run the loop. Parts can be passed in (tests, notebooks)."""
    ui = ui or SilentUI()
    store = RunStore(config.run_dir)
    data = config.data
    columns = {"text_field": data.text_field, "label_field": data.label_field, "choices_field": data.choices_field, "id_field": data.id_field}
    seeds = load_examples(data.seed_path, **columns, origin="seed", limit=data.seed_limit)
    test = load_examples(data.test_path, **columns, origin="test", limit=data.test_limit) if data.test_path else []
    task = build_task(config.task, seeds)
    task.validate(test)
    store.open(config, force=force)
    student = student or build_student(config.student, config.seed)
    teacher = teacher or build_teacher(config.teacher, config.seed)
    cache = ReplyCache(store.cache_path)
    try:
        llm2llm(config, store, task, student, teacher, cache, seeds, test, ui)
    finally:
        teacher.close()
        cache.close()
    return store


def llm2llm(config: Config, store: RunStore, task: Task, student: Student, teacher: Teacher, cache: ReplyCache,
            seeds: list[Example], test: list[Example], ui) -> None:
    n = config.loop.iterations
    store.set_finished(False)
    first_train = store.iter_dir(0) / "train.jsonl"
    if not first_train.is_file():
        write_jsonl(first_train, seeds)  # D_0 is the seed set
    elif [e.id for e in read_examples(first_train)] != [e.id for e in seeds]:
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
            with ui.stage(f"finetune {i}", total=student.train_steps(len(pairs))) as advance:
                stats = student.train(pairs, it / "student", advance)
            store.mark_done(i, "finetune", {**stats, "seconds": _since(started)})

        # ── 2. Evaluate on the seed set D_0 only, greedily ───────────────────────────────────────
        if not store.done(i, "evaluate"):
            started = time.perf_counter()
            accuracy = _evaluate(task, student, it, seeds, "seed_predictions.jsonl", f"evaluate seeds {i}", ui)
            store.mark_done(i, "evaluate", {"seed_accuracy": accuracy, "seeds": len(seeds), "seconds": _since(started)})
        ui.log(f"   seed accuracy {store.info(i, 'evaluate')['seed_accuracy']:.1%}")

        last = i == n - 1
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
            correct = {row["id"]: row["correct"] for row in read_jsonl(it / "seed_predictions.jsonl")}
            wrong_examples = [seed for seed in seeds if not correct[seed.id]]
            write_jsonl(it / "wrong.jsonl", wrong_examples)
            store.mark_done(i, "filter", {"wrong": len(wrong_examples)})
        wrong_examples = read_examples(it / "wrong.jsonl")

        # ── 4. Generate from the wrong *seed* examples only; validate and de-duplicate ───────────
        if not store.done(i, "generate"):
            started = time.perf_counter()
            info = _generate(config, task, teacher, cache, it, i, wrong_examples, seeds, train_set, ui)
            store.mark_done(i, "generate", {**info, "seconds": _since(started)})
        info = store.info(i, "generate")
        ui.log(f"   wrong {len(wrong_examples)} → accepted {info['accepted']}, rejected {info['rejected']} {info['rejected_by_reason'] or ''}")

        # ── 5. Append: D_{i+1} = D_i + accepted ──────────────────────────────────────────────────
        if not store.done(i, "append"):
            next_train = train_set + read_examples(it / "generated.jsonl")
            write_jsonl(store.iter_dir(i + 1) / "train.jsonl", next_train)
            store.mark_done(i, "append", {"next_train_size": len(next_train)})
    store.set_finished(True, f"completed {n} iterations")


def _evaluate(task: Task, student: Student, it: Path, examples: list[Example], filename: str, title: str, ui) -> float:
    with ui.stage(title, total=len(examples)) as advance:
        outputs = student.predict(it / "student", [task.student_messages(e) for e in examples], task.max_new_tokens, advance)
    rows = [
        {"id": e.id, "output": output, "answer": task.extract_answer(output), "label": e.label, "correct": task.is_correct(e, output)}
        for e, output in zip(examples, outputs)
    ]
    write_jsonl(it / filename, rows)
    return sum(row["correct"] for row in rows) / len(rows)


def _generate(config: Config, task: Task, teacher: Teacher, cache: ReplyCache, it: Path, iteration: int,
              wrong_examples: list[Example], seeds: list[Example], train_set: list[Example], ui) -> dict:
    # Source examples are seeds only: the paper's ablation (Table 6) shows augmenting from generated data hurts.
    requests, parents = [], []
    for wrong in wrong_examples:
        messages = task.teacher_messages(wrong, context=seeds)
        for k in range(config.teacher.samples_per_wrong):
            requests.append(TeacherRequest(messages=messages, sample_index=k, round=iteration))
            parents.append(wrong)
    with ui.stage(f"generate {iteration}", total=len(requests)) as advance:
        results = generate(teacher, requests, cache, max_concurrency=config.teacher.max_concurrency, advance=advance)

    known = {task.dedup_key(example.text) for example in train_set}
    accepted, rejected = [], []
    for (key, reply), request, parent in zip(results, requests, parents):
        reason, detail = None, ""
        if reply.error:
            reason, detail = "request_failed", reply.error
        elif reply.finish_reason == "length":
            reason = "truncated"
        elif not reply.text.strip():
            reason = "empty_reply"
        else:
            try:
                fields = task.parse_teacher_reply(reply.text, parent)
            except Rejected as rejection:
                reason, detail = rejection.reason, rejection.detail
            else:
                key_text = task.dedup_key(fields["text"])
                if key_text in known:
                    reason = "duplicate"
                else:
                    known.add(key_text)
                    accepted.append(Example(
                        id=f"gen-{iteration:03d}-{parent.id}-{request.sample_index}", **fields,
                        origin="teacher", parent_id=parent.id, iteration=iteration, teacher=teacher.name, prompt_hash=key,
                    ))
        if reason:
            rejected.append({"parent_id": parent.id, "iteration": iteration, "sample_index": request.sample_index,
                             "prompt_hash": key, "reason": reason, "detail": detail, "reply": reply.text})
    write_jsonl(it / "generated.jsonl", accepted)
    write_jsonl(it / "rejected.jsonl", rejected)
    return {
        "requests": len(requests),
        "cached_replies": sum(reply.cached for _, reply in results),
        "accepted": len(accepted),
        "rejected": len(rejected),
        "rejected_by_reason": dict(Counter(row["reason"] for row in rejected)),
        "teacher_prompt_tokens": sum(reply.prompt_tokens for _, reply in results),
        "teacher_completion_tokens": sum(reply.completion_tokens for _, reply in results),
    }


def _prune_students(config: Config, store: RunStore, iteration: int) -> None:
    keep = config.student.keep_checkpoints
    if keep == "last" and iteration > 0:
        store.prune_student(iteration - 1)
    elif keep == "none":
        store.prune_student(iteration)


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 2)
