"""The LLM2LLM loop (Lee et al., 2024, Algorithm 1), top to bottom, every stage resumable.

    for i in 0..n-1:
        1. Finetune  a fresh student from the base weights on D_i
        2. Evaluate  it greedily on the seed set D_0 only
        3. Filter    the seed examples it got wrong
        4. Generate  new examples from each wrong *seed* example with the teacher; validate, drop near-duplicates
                     and test-set look-alikes, and keep what a blind verifier confirms
        5. Append    D_{i+1} = D_i + accepted
    and evaluate on the test set (each iteration if asked, the last one always).

The last iteration does not generate: no student would be trained on that data. A stage whose done-marker is
in state.json is skipped on a re-run; one that died half-way is redone, its teacher calls coming from the cache.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from llm2llm.config import Config, TeacherConfig
from llm2llm.data import Example, load_examples, read_examples, read_jsonl, write_jsonl
from llm2llm.errors import BudgetReached, RunStateError
from llm2llm.progress import SilentUI
from llm2llm.runstore import RunStore
from llm2llm.students import Student, build_student
from llm2llm.tasks import Rejected, Task, build_task
from llm2llm.quality import RougeIndex, verifier_messages, verifier_shots
from llm2llm.teachers import ReplyCache, Teacher, TeacherReply, TeacherRequest, build_teacher, generate, price


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
            correct = {row["id"]: row["correct"] for row in read_jsonl(it / "seed_predictions.jsonl")}
            wrong_examples = [seed for seed in seeds if not correct[seed.id]]
            write_jsonl(it / "wrong.jsonl", wrong_examples)
            store.mark_done(i, "filter", {"wrong": len(wrong_examples)})
        wrong_examples = read_examples(it / "wrong.jsonl")

        # ── 4. Generate from the wrong *seed* examples only; validate and de-duplicate ───────────
        if not store.done(i, "generate"):
            _check_budget(config, store)
            started = time.perf_counter()
            info = _generate(config, task, teacher, verifier, cache, it, i, wrong_examples, seeds, train_set, test, ui)
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


def _generate(config: Config, task: Task, teacher: Teacher, verifier: Teacher, cache: ReplyCache, it: Path, iteration: int,
              wrong_examples: list[Example], seeds: list[Example], train_set: list[Example], test: list[Example], ui) -> dict:
    # Source examples are seeds only: the paper's ablation (Table 6) shows augmenting from generated data hurts.
    requests, parents = [], []
    for wrong in wrong_examples:
        messages = task.teacher_messages(wrong, context=seeds)
        for k in range(config.teacher.samples_per_wrong):
            requests.append(TeacherRequest(messages=messages, sample_index=k, round=iteration))
            parents.append(wrong)
    with ui.stage(f"generate {iteration}", total=len(requests)) as advance:
        results = generate(teacher, requests, cache, max_concurrency=config.teacher.max_concurrency, advance=advance,
                           max_failure_ratio=config.teacher.max_failure_ratio)

    # Parse and validate each reply, then drop near-duplicates of D_i (seeds included) and of earlier replies.
    quality = config.quality
    known = RougeIndex([example.text for example in train_set], [example.id for example in train_set])
    test_index = RougeIndex([example.text for example in test], [example.id for example in test])
    candidates, rejected, overlaps = [], [], []
    for (key, reply), request, parent in zip(results, requests, parents):
        try:
            example = _candidate(task, reply, parent, iteration, request.sample_index, teacher.name, key)
            similarity, match = known.nearest(example.text)
            if similarity >= quality.near_duplicate_rouge_l:
                raise Rejected("near_duplicate", f"ROUGE-L {similarity:.2f} with {match}")
            similarity, match = test_index.nearest(example.text)
            if similarity >= quality.test_overlap_rouge_l:
                overlaps.append({"id": example.id, "test_id": match, "rouge_l": round(similarity, 3), "dropped": quality.drop_test_overlap})
                if quality.drop_test_overlap:
                    raise Rejected("test_overlap", f"ROUGE-L {similarity:.2f} with test example {match}")
        except Rejected as rejection:
            rejected.append({"parent_id": parent.id, "iteration": iteration, "sample_index": request.sample_index,
                             "prompt_hash": key, "reason": rejection.reason, "detail": rejection.detail, "reply": reply.text})
            continue
        known.add(example.text, example.id)
        candidates.append(example)

    # Blind verification: the verifier answers each new example from seed examples alone; keep it only on agreement.
    verify = task.verify_by_default if quality.verify is None else quality.verify
    verdicts = _verify(config, task, verifier, cache, candidates, seeds, iteration, ui) if verify and candidates else []
    accepted = []
    for index, example in enumerate(candidates):
        if verdicts:
            key, reply = verdicts[index]
            disagreement = _disagreement(task, example, reply)
            if disagreement:
                rejected.append({"parent_id": example.parent_id, "iteration": iteration, "prompt_hash": example.prompt_hash,
                                 "verify_hash": key, "reason": disagreement[0], "detail": disagreement[1], "reply": reply.text,
                                 "example": example.model_dump(mode="json", exclude_none=True)})
                continue
        accepted.append(example)
    write_jsonl(it / "generated.jsonl", accepted)
    write_jsonl(it / "rejected.jsonl", rejected)
    write_jsonl(it / "test_overlap.jsonl", overlaps)
    replies = [reply for _, reply in results + verdicts]
    return {
        "requests": len(requests),
        "verify_requests": len(verdicts),
        "cached_replies": sum(reply.cached for reply in replies),
        "teacher_retries": sum(reply.retries for reply in replies if not reply.cached),
        "accepted": len(accepted),
        "rejected": len(rejected),
        "rejected_by_reason": dict(Counter(row["reason"] for row in rejected)),
        "test_overlap_flagged": len(overlaps),
        "teacher_prompt_tokens": sum(reply.prompt_tokens for reply in replies),
        "teacher_completion_tokens": sum(reply.completion_tokens for reply in replies),
        "teacher_cost": _cost([(config.teacher, results), (config.quality.verifier or config.teacher, verdicts)]),
    }


def _cost(priced: list[tuple[TeacherConfig, list[tuple[str, TeacherReply]]]]) -> float | None:
    """What the replies cost at each model's prices (cached ones too: this run paid for them once); None without prices."""
    costs = [price(settings, sum(r.prompt_tokens for _, r in results), sum(r.completion_tokens for _, r in results))
             for settings, results in priced]
    return None if None in costs else round(sum(costs), 6)


def _candidate(task: Task, reply: TeacherReply, parent: Example, iteration: int, sample_index: int, teacher: str, key: str) -> Example:
    """The new example in a teacher reply, or Rejected with the reason it cannot be trained on."""
    if reply.error:
        raise Rejected("request_failed", reply.error)
    if reply.finish_reason == "length":
        raise Rejected("truncated")
    if not reply.text.strip():
        raise Rejected("empty_reply")
    fields = task.parse_teacher_reply(reply.text, parent)
    return Example(
        id=f"gen-{iteration:03d}-{parent.id}-{sample_index}", **fields,
        origin="teacher", parent_id=parent.id, iteration=iteration, teacher=teacher, prompt_hash=key,
    )


def _verify(config: Config, task: Task, verifier: Teacher, cache: ReplyCache, candidates: list[Example],
            seeds: list[Example], iteration: int, ui) -> list[tuple[str, TeacherReply]]:
    by_id = {seed.id: seed for seed in seeds}
    requests = [
        TeacherRequest(
            messages=verifier_messages(task, example, verifier_shots(task, seeds, by_id[example.parent_id], config.quality.verify_examples)),
            round=iteration, temperature=0.0, max_tokens=task.max_new_tokens,
        )
        for example in candidates
    ]
    settings = config.quality.verifier or config.teacher
    with ui.stage(f"verify {iteration}", total=len(requests)) as advance:
        return generate(verifier, requests, cache, max_concurrency=settings.max_concurrency, advance=advance,
                        max_failure_ratio=settings.max_failure_ratio)


def _disagreement(task: Task, example: Example, reply: TeacherReply) -> tuple[str, str] | None:
    """(reason, detail) when the verifier's blind answer does not confirm the example's label; None when it does."""
    if reply.error:
        return "unverified", reply.error
    if task.is_correct(example, reply.text):
        return None
    answer = task.extract_answer(reply.text)
    if answer is None:
        return "unverified", f"no answer in the verifier's reply {reply.text[:60]!r}"
    return "label_mismatch", f"intended {example.label}, verifier answered {answer}"


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
