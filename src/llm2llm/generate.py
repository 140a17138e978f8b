"""Step 4 of the loop, Generate: new examples from the teacher, checked before anything trains on them (also AugGPT's
and one-shot's source of examples).

For each parent (a seed example chosen by Select) the teacher is asked for a new example; each reply then goes
through, in order:
    length         a reply far longer than any seed (quality.max_reply_ratio) is rejected unread: too_long
    parse          the task's parser and validator (and the loop's request_failed / prompt_too_long / truncated /
                   empty_reply; prompt_too_long: the teacher refused the request for its size)
    surface form   with quality.match_seed_form: lower case and no punctuation where (nearly) every seed is so
    like its seed  ROUGE-L with the seed it was written from < quality.min_seed_rouge_l (off by default): unlike_seed
    near-duplicate ROUGE-L with D_i (seeds included) or an earlier reply of the batch ≥ quality.near_duplicate_rouge_l
    test overlap   ROUGE-L with a test example ≥ quality.test_overlap_rouge_l: listed, and dropped by default
    verify         a blind verifier answers the new example from seed examples alone; kept only on agreement
Every rejection keeps its reason. With `count` set (AugGPT, one-shot), parents are asked round-robin until `count`
examples are accepted, asking again for the shortfall for up to `augment.max_rounds` rounds; without it (the loop),
each parent is asked `teacher.samples_per_wrong` times once (or as often as select.spread dealt it).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from llm2llm.config import TeacherConfig
from llm2llm.context import RunContext
from llm2llm.data import Example, write_jsonl
from llm2llm.quality import RougeIndex, SurfaceForm, rouge_l, verifier_messages, verifier_shots
from llm2llm.tasks import Rejected, Task
from llm2llm.teachers import TeacherReply, TeacherRequest, generate, price


def teacher_examples(run: RunContext, out_dir: Path, iteration: int, parents: list[Example], train_set: list[Example],
                     count: int | None = None, student_answers: dict[str, str | None] | None = None,
                     requests: dict[str, int] | None = None) -> dict:
    """Ask for new examples made from `parents`; write generated/rejected/test_overlap.jsonl in out_dir; return metrics.
    `student_answers` (parent id → what the student answered) go into the prompts when teacher.show_student_answer;
    `requests` (parent id → how many, from select.spread) replaces teacher.samples_per_wrong for those parents."""
    config, task = run.config, run.task
    show = config.teacher.show_student_answer
    answers = (student_answers or {}) if (show if show is not None else config.select.by != "train_errors") else {}
    # A reply far longer than any seed is a runaway (a server ignoring max_tokens, a model that loops): never parsed,
    # let alone trained on. 200 characters cover the reply's field names and a line of preamble.
    longest_seed = max(len(seed.text) + len(seed.label) + sum(map(len, seed.choices or [])) for seed in run.seeds)
    max_reply_chars = int(config.quality.max_reply_ratio * longest_seed) + 200
    known = RougeIndex([example.text for example in train_set], [example.id for example in train_set])
    test_index = RougeIndex([example.text for example in run.test], [example.id for example in run.test])
    form = SurfaceForm.of([seed.text for seed in run.seeds]) if config.quality.match_seed_form else None
    reformed = 0  # examples the surface form changed
    asked: Counter[str] = Counter()  # requests per parent so far: a new round asks with new sample indexes
    accepted, rejected, overlaps, results, verdicts = [], [], [], [], []
    for round_index in range(1 if count is None else config.augment.max_rounds):
        if count is None:  # grouped by answer, so consecutive requests share their prompt's label part (prefix cache)
            per_parent = {parent.id: (requests or {}).get(parent.id, config.teacher.samples_per_wrong) for parent in parents}
            sources = [parent for parent in sorted(parents, key=lambda p: str(p.label)) for _ in range(per_parent[parent.id])]
        else:
            sources = [parents[j % len(parents)] for j in range(len(accepted), count)]
        if not sources:
            break
        requests = []
        for parent in sources:
            messages = task.teacher_messages(parent, context=run.seeds, student_answer=answers.get(parent.id))
            requests.append(TeacherRequest(messages=messages, sample_index=asked[parent.id], round=iteration))
            asked[parent.id] += 1
        label = f"generate {iteration}" + (f" · round {round_index + 1}" if round_index else "")
        with run.ui.stage(label, total=len(requests)) as advance:
            replies = generate(run.teacher, requests, run.cache, max_concurrency=config.teacher.max_concurrency, advance=advance,
                               max_failure_ratio=config.teacher.max_failure_ratio)
        results += replies

        candidates = []
        for (key, reply), request, parent in zip(replies, requests, sources):
            try:
                _check_length(reply, max_reply_chars, longest_seed, config.quality.max_reply_ratio)
                example = _parse(task, reply, parent, iteration, request.sample_index, run.teacher.name, key)
                if form is not None and (text := _match_form(example, form)) != example.text:
                    example, reformed = example.model_copy(update={"text": text}), reformed + 1
                _check_like_seed(example, parent, config.quality.min_seed_rouge_l)
                _check_near_duplicate(example, known, config.quality.near_duplicate_rouge_l)
                _check_test_overlap(example, test_index, config.quality, overlaps)
            except Rejected as rejection:
                kept = reply.text if rejection.reason != "too_long" else reply.text[:max_reply_chars] + " …"
                rejected.append({"parent_id": parent.id, "iteration": iteration, "sample_index": request.sample_index,
                                 "prompt_hash": key, "reason": rejection.reason, "detail": rejection.detail, "reply": kept})
                continue
            known.add(example.text, example.id)
            candidates.append((example, parent))

        checked = _verify(run, candidates, iteration) if run.verify and candidates else []
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
        "form_matched": reformed,
        "teacher_prompt_tokens": sum(reply.prompt_tokens for reply in replies),
        "teacher_cached_prompt_tokens": sum(reply.cached_prompt_tokens for reply in replies if not reply.cached),
        "teacher_completion_tokens": sum(reply.completion_tokens for reply in replies),
        "teacher_cost": _cost([(config.teacher, results), (config.quality.verifier or config.teacher, verdicts)]),
    }


# ── the checks, in order ─────────────────────────────────────────────────────────────────────────────
def _check_length(reply: TeacherReply, max_chars: int, longest_seed: int, ratio: float) -> None:
    if len(reply.text) > max_chars:
        raise Rejected("too_long", f"{len(reply.text):,} characters, more than {max_chars:,} "
                       f"(quality.max_reply_ratio={ratio} x the longest seed, {longest_seed:,})")


def _parse(task: Task, reply: TeacherReply, parent: Example, iteration: int, sample_index: int, teacher: str, key: str) -> Example:
    """The new example in a teacher reply, or Rejected with the reason it cannot be trained on."""
    if reply.error:
        # Refused for its size (prompt and max_tokens beyond the teacher's context): this request's problem only.
        raise Rejected("prompt_too_long" if reply.too_long else "request_failed", reply.error)
    if reply.finish_reason == "length":
        raise Rejected("truncated")
    if not reply.text.strip():
        raise Rejected("empty_reply")
    fields = task.parse_teacher_reply(reply.text, parent)
    return Example(
        id=f"gen-{iteration:03d}-{parent.id}-{sample_index}", **fields,
        origin="teacher", parent_id=parent.id, iteration=iteration, teacher=teacher, prompt_hash=key,
    )


def _match_form(example: Example, form: SurfaceForm) -> str:
    text = form.apply(example.text)
    if not text:
        raise Rejected("empty_text", "nothing left once in the seeds' form")
    return text


def _check_like_seed(example: Example, parent: Example, threshold: float) -> None:
    if threshold > 0 and (similarity := rouge_l(example.text, parent.text)) < threshold:
        raise Rejected("unlike_seed", f"ROUGE-L {similarity:.2f} with its seed {parent.id}")


def _check_near_duplicate(example: Example, known: RougeIndex, threshold: float) -> None:
    similarity, match = known.nearest(example.text)
    if similarity >= threshold:
        raise Rejected("near_duplicate", f"ROUGE-L {similarity:.2f} with {match}")


def _check_test_overlap(example: Example, test_index: RougeIndex, quality, overlaps: list[dict]) -> None:
    similarity, match = test_index.nearest(example.text)
    if similarity >= quality.test_overlap_rouge_l:
        overlaps.append({"id": example.id, "test_id": match, "rouge_l": round(similarity, 3), "dropped": quality.drop_test_overlap})
        if quality.drop_test_overlap:
            raise Rejected("test_overlap", f"ROUGE-L {similarity:.2f} with test example {match}")


def _verify(run: RunContext, candidates: list[tuple[Example, Example]], iteration: int) -> list[tuple[str, TeacherReply]]:
    """The verifier's blind answer to each candidate, from seed examples alone (never the parent or the intended label)."""
    quality = run.config.quality
    requests = [
        TeacherRequest(
            messages=verifier_messages(run.task, example, verifier_shots(run.task, run.seeds, parent, quality.verify_examples)),
            round=iteration, temperature=0.0, max_tokens=run.task.max_new_tokens,
        )
        for example, parent in candidates
    ]
    settings = quality.verifier or run.config.teacher
    with run.ui.stage(f"verify {iteration}", total=len(requests)) as advance:
        return generate(run.verifier, requests, run.cache, max_concurrency=settings.max_concurrency, advance=advance,
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


def _cost(priced: list[tuple[TeacherConfig, list[tuple[str, TeacherReply]]]]) -> float | None:
    """What the replies cost at each model's prices (cached ones too: this run paid for them once); None without prices."""
    costs = [price(settings, sum(r.prompt_tokens for _, r in results), sum(r.completion_tokens for _, r in results))
             for settings, results in priced]
    return None if None in costs else round(sum(costs), 6)
