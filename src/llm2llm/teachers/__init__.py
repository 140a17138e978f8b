"""Teachers turn chat messages into replies; `generate` adds the cache, concurrency and progress around them.

A teacher knows nothing of tasks. Every reply is stored in a SQLite cache keyed by a hash of the model, the
messages, the sampling parameters and the sample index, as soon as it arrives, so a crashed or interrupted run
never pays for the same request twice.
"""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from llm2llm.config import TeacherConfig
from llm2llm.data import content_hash
from llm2llm.errors import TeacherError
from llm2llm.plugins import load_class

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class TeacherRequest:
    messages: Messages
    sample_index: int = 0  # the k-th sample for the same messages
    round: int = 0  # the loop iteration: a seed still wrong later gets a fresh sample, not the cached one
    temperature: float | None = None  # overrides the teacher's setting (verification asks greedily)
    max_tokens: int | None = None  # overrides the teacher's setting

    def sampling(self, params: dict[str, Any]) -> dict[str, Any]:
        """The teacher's sampling parameters with this request's overrides applied."""
        overrides = {"temperature": self.temperature, "max_tokens": self.max_tokens}
        return {**params, **{name: value for name, value in overrides.items() if value is not None}}


@dataclass
class TeacherReply:
    text: str
    finish_reason: str | None = None  # "stop", "length" (truncated), ...
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None  # set when the request failed after its retries
    too_long: bool = False  # with error: the server refused this one request for its size (rejected as prompt_too_long)
    cached: bool = False
    retries: int = 0  # attempts beyond the first (stored in the cache; rows written before it read as 0)
    tokens_estimated: bool = False  # the server sent no usage: token counts are characters / 4
    cached_prompt_tokens: int = 0  # prompt tokens the server reused from its prompt cache (usage.prompt_tokens_details)


class Teacher(Protocol):
    name: str  # model identity: recorded in each example's lineage and in the cache key

    def params(self) -> dict[str, Any]:
        """Sampling parameters that change the reply (part of the cache key)."""

    def complete(self, request: TeacherRequest, seed: int) -> TeacherReply:
        """One reply. Raise TeacherError for failures no retry can fix (bad key, unknown model)."""

    def close(self) -> None: ...

    # Optional: `check(self, key: str) -> None`, called before a run writes anything, raises an Llm2llmError naming
    # the config key, URL, variable or path when this teacher cannot serve (preflight.py). Teachers without it are
    # trusted until their first request.


TEACHERS = {
    "openai": "llm2llm.teachers.openai_compat:OpenAITeacher",
    "local": "llm2llm.teachers.openai_compat:LocalTeacher",
    "hf": "llm2llm.teachers.hf:HFTeacher",
}


def sampling_params(config: TeacherConfig, seed: int) -> dict[str, Any]:
    """The parameters that change a reply, shared by all teachers (part of every cache key)."""
    return {"temperature": config.temperature, "top_p": config.top_p, "max_tokens": config.max_tokens, "seed": seed}


def estimate_tokens(chars: int) -> int:
    """Tokens in `chars` characters, where no tokenizer count is at hand: about 4 characters a token (English, BPE)."""
    return math.ceil(chars / 4)


def price(config: TeacherConfig, prompt_tokens: int, completion_tokens: int) -> float | None:
    """Cost of the tokens at the configured prices per million; None when no prices are set."""
    if config.price_input_per_1m is None or config.price_output_per_1m is None:
        return None
    return (prompt_tokens * config.price_input_per_1m + completion_tokens * config.price_output_per_1m) / 1e6


def build_teacher(config: TeacherConfig, seed: int, key: str = "teacher") -> Teacher:
    """The teacher `config` describes; `key` is where it sits in the config (teacher, quality.verifier) for messages."""
    return load_class(config.type, TEACHERS, f"{key}.type", Teacher, "llm2llm.teachers")(config, seed)


def request_key(teacher: Teacher, request: TeacherRequest) -> str:
    params = request.sampling(teacher.params())
    return content_hash(teacher.name, request.messages, params, request.sample_index, request.round, length=32)


class ReplyCache:
    """request key -> reply, in one SQLite file; written from the calling thread only."""

    def __init__(self, path: Path) -> None:
        self.connection = sqlite3.connect(path)
        self.connection.execute(
            "CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, model TEXT, request TEXT, reply TEXT,"
            " created TEXT DEFAULT CURRENT_TIMESTAMP)"
        )
        self.connection.commit()

    def get(self, key: str) -> TeacherReply | None:
        row = self.connection.execute("SELECT reply FROM replies WHERE key = ?", (key,)).fetchone()
        return TeacherReply(**{**json.loads(row[0]), "cached": True}) if row else None

    def put(self, key: str, model: str, request: TeacherRequest, reply: TeacherReply) -> None:
        record = {k: v for k, v in asdict(reply).items() if k != "cached"}
        self.connection.execute(
            "INSERT OR REPLACE INTO replies (key, model, request, reply) VALUES (?, ?, ?, ?)",
            (key, model, json.dumps(asdict(request), ensure_ascii=False), json.dumps(record, ensure_ascii=False)),
        )
        self.connection.commit()

    def __len__(self) -> int:
        return self.connection.execute("SELECT COUNT(*) FROM replies").fetchone()[0]

    def close(self) -> None:
        self.connection.close()


def generate(
    teacher: Teacher,
    requests: list[TeacherRequest],
    cache: ReplyCache,
    *,
    max_concurrency: int = 1,
    advance: Callable[[int], None] | None = None,
    max_failure_ratio: float = 1.0,
) -> list[tuple[str, TeacherReply]]:
    """(request key, reply) for each request, in order. Cached replies are reused; failed ones are not cached.

    Raises TeacherError when a teacher does (nothing queued after it is sent), or when more than
    `max_failure_ratio` of the requests failed after their retries.
    """
    keys = [request_key(teacher, request) for request in requests]
    replies: list[TeacherReply | None] = [cache.get(key) for key in keys]
    if advance:
        advance(sum(reply is not None for reply in replies))
    missing = [i for i, reply in enumerate(replies) if reply is None]
    if missing:
        sending = _send(teacher, requests, keys, missing, replies, cache, max_concurrency, advance)
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # the usual case: no event loop in this thread
            asyncio.run(sending)
        else:  # called from async code (a notebook): run on a thread with its own loop
            with ThreadPoolExecutor(max_workers=1) as runner:
                runner.submit(asyncio.run, sending).result()
    # A request refused for its size is that request's problem (rejected as prompt_too_long), not the endpoint's.
    failed = [reply for reply in replies if reply is not None and reply.error and not reply.too_long]
    if requests and len(failed) / len(requests) > max_failure_ratio:
        raise TeacherError(
            f"teacher {teacher.name}: {len(failed)} of {len(requests)} requests failed after their retries "
            f"({len(failed) / len(requests):.0%}, more than teacher.max_failure_ratio={max_failure_ratio}); first error: "
            f"{failed[0].error}. The {len(requests) - len(failed)} finished replies are cached, so re-running resumes "
            "from them; check the endpoint, or raise teacher.max_failure_ratio / teacher.max_retries."
        )
    return list(zip(keys, replies))  # type: ignore[arg-type]


async def _send(teacher: Teacher, requests: list[TeacherRequest], keys: list[str], missing: list[int],
                replies: list[TeacherReply | None], cache: ReplyCache, max_concurrency: int, advance) -> None:
    """Send the missing requests, at most max_concurrency in flight: through the teacher's async client where it has
    one (`acomplete`), else its complete() on as many worker threads. Each reply is cached as it arrives (on this
    thread). After a fatal error or Ctrl-C nothing queued is sent, and requests already sent are waited for, so
    their replies are kept and no server is stopped under them."""
    loop = asyncio.get_running_loop()
    threads = None if hasattr(teacher, "acomplete") else ThreadPoolExecutor(max_workers=max_concurrency)
    slots = asyncio.Semaphore(max_concurrency)
    stopped, sent = False, set()

    def keep(i: int, reply: TeacherReply) -> None:
        if reply.error is None:
            cache.put(keys[i], teacher.name, requests[i], reply)
        replies[i] = reply
        if advance:
            advance(1)

    async def one(i: int) -> tuple[int, TeacherReply | None]:
        nonlocal stopped
        async with slots:
            if stopped:
                return i, None
            sent.add(i)
            seed = int(keys[i][:8], 16)  # from the key: the same request samples the same way on every run
            try:
                if threads is None:
                    return i, await teacher.acomplete(requests[i], seed)
                return i, await loop.run_in_executor(threads, teacher.complete, requests[i], seed)
            except BaseException:
                stopped = True  # set before the slot is freed, so no queued request goes out after a fatal error
                raise

    tasks = {i: asyncio.ensure_future(one(i)) for i in missing}
    try:
        for finished in asyncio.as_completed(tasks.values()):
            i, reply = await finished
            if reply is not None:
                keep(i, reply)
    finally:
        stopped = True
        for i, task in tasks.items():
            if i not in sent:
                task.cancel()
        unkept = [task for i, task in tasks.items() if i in sent and replies[i] is None]  # in flight, or done unread
        for outcome in await asyncio.gather(*unkept, return_exceptions=True):
            if isinstance(outcome, tuple) and outcome[1] is not None:
                keep(*outcome)
        if hasattr(teacher, "aclose"):
            await teacher.aclose()
        if threads is not None:
            threads.shutdown(wait=False, cancel_futures=True)
