"""Preflight: what a run needs, checked in seconds before anything is written or trained.

A typo in a config should cost seconds, not a fine-tune's minutes, and must not leave behind a frozen config that
then refuses the corrected one. So, after the data is loaded and validated (loop.load_data) and before the run
directory is touched:
- the student: its model resolves (a folder, a Hub id, a .gguf file or a bundled alias) and its tokenizer loads;
- lengths: a seed or test row whose prompt and answer exceed `student.max_length` tokens is an error naming its
  file:line and token count, or, with `data.truncate`, its text loses its middle to fit. Seeds whose teacher request
  will not fit a local teacher's context are warned of (the teacher's tokenizer is not at hand: an estimate);
- labels: test labels that no seed has are warned of, once, with the list;
- every teacher the run will ask (the teacher, a separate verifier): its `check()` — the API key's variable set,
  the endpoint answering and serving the model, or the local GGUF present (teachers/);
- augment.method=more_data: its pool file loads, with enough rows that are not seeds or tests;
- report_to: each tracker's package is installed.
"""

from __future__ import annotations

import warnings

from llm2llm.config import Config
from llm2llm.data import Example
from llm2llm.errors import DataError, Llm2llmWarning
from llm2llm.students import Student
from llm2llm.tasks import Task
from llm2llm.teachers import Teacher, build_teacher
from llm2llm.tracking import check_trackers

SHOWN = 5  # rows named in a message; the rest are counted
MIN_TEXT_TOKENS = 16  # truncation never leaves less of a text than this


def preflight(config: Config, task: Task, seeds: list[Example], test: list[Example], *, student: Student | None = None,
              teacher: Teacher | None = None) -> tuple[list[Example], list[Example]]:
    """Check everything the run will need; raise an Llm2llmError naming what to fix. Returns the seed and test sets,
    over-long texts shortened when data.truncate asks for it. Parts passed in (tests, notebooks) are not re-checked
    beyond their own `check()`."""
    # Teachers first: their checks need no torch, so an unset key or a dead URL is reported soonest.
    asks_teacher = config.augment.method == "auggpt" or (config.augment.method == "llm2llm" and config.loop.iterations > 1)
    verify = task.verify_by_default if config.quality.verify is None else config.quality.verify
    for settings, key, given in ((config.teacher, "teacher", teacher),
                                 (config.quality.verifier if verify else None, "quality.verifier", None)):
        if asks_teacher and settings is not None:
            part = given or build_teacher(settings, config.seed, key)
            if hasattr(part, "check"):
                part.check(key)
    if config.augment.method == "more_data":
        from llm2llm.augment.baselines import pool_examples

        task.validate(pool_examples(config, seeds, test))  # loads, has enough fresh rows, labels the task knows
    _warn_unseen_labels(task, seeds, test)
    check_trackers(config)  # report_to: each tracker's package is installed
    if student is not None or config.student.type != "hf":
        return seeds, test
    from llm2llm.models import load_tokenizer

    tokenizer = load_tokenizer(config.student.model, "student.model")
    seeds, test = _fit(config, task, tokenizer, seeds, "seed"), _fit(config, task, tokenizer, test, "test")
    if asks_teacher and config.teacher.type == "local" and teacher is None:
        _warn_teacher_context(config, task, tokenizer, seeds)
    return seeds, test


# ── lengths ─────────────────────────────────────────────────────────────────────────────────────
def _needed(task: Task, tokenizer, example: Example) -> int:
    """Tokens the student needs for this row: prompt plus answer to train on it, prompt plus the task's longest
    answer to predict it (the student cuts prompts that leave less room, losing their start)."""
    from llm2llm.students.hf import encode_prompt, encode_target

    prompt = len(encode_prompt(tokenizer, task.student_messages(example)))
    answer = len(encode_target(tokenizer, task.target(example))) if example.origin == "seed" else 0
    return prompt + max(answer, task.max_new_tokens)


def _fit(config: Config, task: Task, tokenizer, examples: list[Example], role: str) -> list[Example]:
    limit = config.student.max_length
    over = [(index, needed) for index, example in enumerate(examples) if (needed := _needed(task, tokenizer, example)) > limit]
    if not over:
        return examples
    listed = _listing(examples, over)
    if not config.data.truncate:
        raise DataError(
            f"{len(over)} {role} row(s) need more than student.max_length={limit} tokens (prompt and answer): {listed}. "
            "Shorten or remove them, raise student.max_length, or set data.truncate=true to cut the middle of their text"
        )
    fitted = list(examples)
    for index, _ in over:
        fitted[index] = _shorten(task, tokenizer, examples[index], limit)
    warnings.warn(f"data.truncate: cut the middle of the text of {len(over)} {role} row(s) to fit student.max_length="
                  f"{limit}: {listed}", Llm2llmWarning, stacklevel=3)
    return fitted


def _shorten(task: Task, tokenizer, example: Example, limit: int) -> Example:
    """The example with the middle of its text replaced by ' … ', so that it fits `limit` tokens."""
    ids = tokenizer(example.text, add_special_tokens=False).input_ids
    excess = _needed(task, tokenizer, example) - limit
    for _ in range(5):  # decoding and re-encoding at the cut can merge tokens differently: re-measure, cut a bit more
        keep = len(ids) - excess - 4
        if keep < MIN_TEXT_TOKENS:
            raise DataError(f"{example.source or example.id}: does not fit student.max_length={limit} even with its text "
                            "cut: the rest of its prompt and its answer are too long. Raise student.max_length or remove it")
        head = keep // 2
        text = f"{tokenizer.decode(ids[:head])} … {tokenizer.decode(ids[len(ids) - (keep - head):])}"
        shortened = example.model_copy(update={"text": text})
        still = _needed(task, tokenizer, shortened) - limit
        if still <= 0:
            return shortened
        excess += still
    raise DataError(f"{example.source or example.id}: could not be cut to fit student.max_length={limit}; shorten it by hand")


def _warn_teacher_context(config: Config, task: Task, tokenizer, seeds: list[Example]) -> None:
    """Seeds whose generation request, with the teacher's max_tokens, would not fit a local teacher's context."""
    room = config.teacher.n_ctx - config.teacher.max_tokens
    over = []
    for index, seed in enumerate(seeds):
        messages = task.teacher_messages(seed, context=seeds)
        tokens = len(tokenizer("\n".join(message["content"] for message in messages)).input_ids) + 8 * len(messages)
        if tokens > room:
            over.append((index, tokens))
    if over:
        warnings.warn(
            f"{len(over)} seed row(s) make teacher requests that, with teacher.max_tokens={config.teacher.max_tokens}, "
            f"may not fit teacher.n_ctx={config.teacher.n_ctx} (counted with the student's tokenizer): "
            f"{_listing(seeds, over)}. The teacher will refuse those (rejected as prompt_too_long); raise teacher.n_ctx",
            Llm2llmWarning, stacklevel=3,
        )


def _listing(examples: list[Example], rows: list[tuple[int, int]]) -> str:
    shown = ", ".join(f"{examples[index].source or examples[index].id} has {tokens:,} tokens" for index, tokens in rows[:SHOWN])
    return shown + (f" (and {len(rows) - SHOWN} more)" if len(rows) > SHOWN else "")


# ── labels ──────────────────────────────────────────────────────────────────────────────────────
def _warn_unseen_labels(task: Task, seeds: list[Example], test: list[Example]) -> None:
    """Test labels no seed has (possible only with task.labels set): the student is graded on classes it never saw."""
    if not getattr(task, "labels", None) or not test:
        return
    lacking = sorted({example.label for example in test} - {example.label for example in seeds})
    if lacking:
        rows = sum(example.label in lacking for example in test)
        warnings.warn(
            f"the test set has label(s) that no seed example has: {', '.join(lacking)} ({rows} of {len(test)} test rows); "
            "the student never trains on them and the loop cannot generate examples of them. Add seeds with these labels",
            Llm2llmWarning, stacklevel=3,
        )
