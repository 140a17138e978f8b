"""New examples from the teacher, checked before anything trains on them: the loop's Generate stage, and AugGPT.

Each source example gets a request; each reply is parsed and validated by the task, dropped when it is a
near-duplicate of D_i (seeds included) or of an earlier reply, flagged (and by default dropped) when it looks like a
test example, and kept only if a blind verifier gives it the same answer. Every rejection keeps its reason.

With `count` set (AugGPT, one-shot), sources are asked round-robin until `count` examples are accepted, asking
again for the shortfall for up to `augment.max_rounds` rounds; without it (the loop), each source is asked
`teacher.samples_per_wrong` times once.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from llm2llm.config import Config, TeacherConfig
from llm2llm.data import Example, write_jsonl
from llm2llm.quality import RougeIndex, verifier_messages, verifier_shots
from llm2llm.tasks import Rejected, Task
from llm2llm.teachers import ReplyCache, Teacher, TeacherReply, TeacherRequest, generate, price


def teacher_examples(config: Config, task: Task, teacher: Teacher, verifier: Teacher, cache: ReplyCache, out_dir: Path,
                     iteration: int, sources: list[Example], seeds: list[Example], train_set: list[Example],
                     test: list[Example], ui, count: int | None = None) -> dict:
    """Ask for new examples made from `sources`; write generated/rejected/test_overlap.jsonl in out_dir; return metrics."""
    known = RougeIndex([example.text for example in train_set], [example.id for example in train_set])
    test_index = RougeIndex([example.text for example in test], [example.id for example in test])
    quality = config.quality
    verify = task.verify_by_default if quality.verify is None else quality.verify
    asked: Counter[str] = Counter()  # requests per source so far: a new round asks with new sample indexes
    accepted, rejected, overlaps, results, verdicts = [], [], [], [], []
    for round_index in range(1 if count is None else config.augment.max_rounds):
        if count is None:
            parents = [source for source in sources for _ in range(config.teacher.samples_per_wrong)]
        else:
            parents = [sources[j % len(sources)] for j in range(len(accepted), count)]
        if not parents:
            break
        requests = []
        for parent in parents:
            requests.append(TeacherRequest(messages=task.teacher_messages(parent, context=seeds), sample_index=asked[parent.id], round=iteration))
            asked[parent.id] += 1
        label = f"generate {iteration}" + (f" · round {round_index + 1}" if round_index else "")
        with ui.stage(label, total=len(requests)) as advance:
            replies = generate(teacher, requests, cache, max_concurrency=config.teacher.max_concurrency, advance=advance,
                               max_failure_ratio=config.teacher.max_failure_ratio)
        results += replies

        # Parse and validate each reply, then drop near-duplicates of D_i (seeds included) and of earlier replies.
        candidates = []
        for (key, reply), request, parent in zip(replies, requests, parents):
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
            candidates.append((example, parent))

        # Blind verification: the verifier answers each new example from seed examples alone; keep it only on agreement.
        checked = _verify(config, task, verifier, cache, candidates, seeds, iteration, ui) if verify and candidates else []
        verdicts += checked
        for index, (example, _) in enumerate(candidates):
            if checked:
                key, reply = checked[index]
                disagreement = _disagreement(task, example, reply)
                if disagreement:
                    rejected.append({"parent_id": example.parent_id, "iteration": iteration, "prompt_hash": example.prompt_hash,
                                     "verify_hash": key, "reason": disagreement[0], "detail": disagreement[1], "reply": reply.text,
                                     "example": example.model_dump(mode="json", exclude_none=True)})
                    continue
            accepted.append(example)

    write_jsonl(out_dir / "generated.jsonl", accepted)
    write_jsonl(out_dir / "rejected.jsonl", rejected)
    write_jsonl(out_dir / "test_overlap.jsonl", overlaps)
    replies = [reply for _, reply in results + verdicts]
    return {
        "requests": len(results),
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


def _verify(config: Config, task: Task, verifier: Teacher, cache: ReplyCache, candidates: list[tuple[Example, Example]],
            seeds: list[Example], iteration: int, ui) -> list[tuple[str, TeacherReply]]:
    requests = [
        TeacherRequest(
            messages=verifier_messages(task, example, verifier_shots(task, seeds, parent, config.quality.verify_examples)),
            round=iteration, temperature=0.0, max_tokens=task.max_new_tokens,
        )
        for example, parent in candidates
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
