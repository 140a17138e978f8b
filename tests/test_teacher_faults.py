"""The teacher under faults: a proxy on 127.0.0.1 sits in front of a real llama.cpp server and misbehaves on cue.

The proxy reads a marker such as `[fault:429]` from each request body and, following a script keyed by marker
and attempt number, answers 429 with Retry-After, 500, 503, 401, too slowly, with a cut JSON body, or forwards
the request and rewrites the reply (finish_reason "length", no `usage`). Only the first test needs the real
server; the others never forward.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sqlite3
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections import defaultdict
from contextlib import closing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import pytest

from llm2llm.config import TeacherConfig
from llm2llm.errors import TeacherError
from llm2llm.teachers import ReplyCache, TeacherRequest, build_teacher, generate, request_key

SECRET = "sk-test-SECRET-123"
KEY_ENV = "LLM2LLM_FAULTS_TEST_KEY"
TIMEOUT_S = 2.0
SLOW_S = 4.0  # past TIMEOUT_S: the client gives up first
HOLD_S = 0.5
CANNED_TEXT = "Text: my parcel is late\nLabel: shipping"
CANNED_REPLY = {  # a chat completion without `usage`, as some servers send
    "id": "chatcmpl-canned", "object": "chat.completion", "created": 0, "model": "canned",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": CANNED_TEXT}, "finish_reason": "stop"}],
}


TOO_LONG = {  # status and body of a request refused for its size
    "too_long_llamacpp": (400, {"error": {"code": 400, "type": "exceed_context_size_error", "n_prompt_tokens": 631, "n_ctx": 256,
                                          "message": "request (631 tokens) exceeds the available context size (256 tokens), try increasing it"}}),
    "too_long_openai": (400, {"error": {"type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded",
                                        "message": "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens."}}),
    "too_long_413": (413, {"error": {"message": "Payload Too Large"}}),
}


def messages(marker: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "You answer in one short sentence."},
        {"role": "user", "content": f"Say hello to a customer. [fault:{marker}]"},
    ]


class FaultProxy:
    """A threaded HTTP proxy that answers each request as `script(marker, attempt)` says (None: forward it)."""

    def __init__(self, script: Callable[[str, int], str | None], upstream: str | None = None) -> None:
        self.script = script
        self.upstream_root = upstream.removesuffix("/v1") if upstream else None
        self.arrivals: dict[str, list[float]] = defaultdict(list)  # marker -> monotonic time of each attempt
        self.lock = threading.Lock()
        self.active = self.peak = 0  # requests being answered now, and the most at once
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                proxy.handle(self)

            def log_message(self, *args) -> None:  # keep request lines off stderr
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> FaultProxy:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.shutdown()
        # Waits for every handler: a llama.cpp server stopped with a request in flight can hang the process.
        self.server.server_close()

    def attempts(self, marker: str | None = None) -> int:
        with self.lock:
            return len(self.arrivals[marker]) if marker is not None else sum(map(len, self.arrivals.values()))

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers.get("Content-Length", 0)))
        found = re.search(rb"\[fault:(\w+)\]", body)
        marker = found.group(1).decode() if found else ""
        with self.lock:
            self.arrivals[marker].append(time.monotonic())
            attempt = len(self.arrivals[marker])
        fault = self.script(marker, attempt)
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            if fault == "429":
                self.send(handler, 429, {"error": {"message": "slow down"}}, {"Retry-After": "1"})
            elif fault in ("500", "503"):
                self.send(handler, int(fault), {"error": {"message": "upstream exploded"}})
            elif fault == "401":  # echo the key, as some providers do: the teacher must redact it
                key = handler.headers.get("Authorization", "").removeprefix("Bearer ")
                self.send(handler, 401, {"error": {"message": f"Incorrect API key provided: {key}", "code": "invalid_api_key"}})
            elif fault == "slow":
                time.sleep(SLOW_S)
                self.send(handler, 200, CANNED_REPLY)
            elif fault == "malformed":
                self.send(handler, 200, b'{"id": "chatcmpl-cut", "choices": [{"index": 0, "mess')
            elif fault == "canned":
                self.send(handler, 200, CANNED_REPLY)
            elif fault == "hold":  # a reply that takes a while, so requests overlap
                time.sleep(HOLD_S)
                self.send(handler, 200, CANNED_REPLY)
            elif fault == "no_choices":  # a 200 that is not a completion after all, as overloaded gateways send
                self.send(handler, 200, {**CANNED_REPLY, "choices": []})
            elif fault in TOO_LONG:  # the request does not fit the model's context, as each server says it
                self.send(handler, *TOO_LONG[fault])
            else:
                status, reply = self.forward(handler.path, body)
                if status == 200 and fault == "length":
                    reply["choices"][0]["finish_reason"] = "length"
                if status == 200 and fault == "no_usage":
                    reply.pop("usage", None)
                self.send(handler, status, reply)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out and left
        finally:
            with self.lock:
                self.active -= 1

    def forward(self, path: str, body: bytes) -> tuple[int, dict]:
        request = urllib.request.Request(self.upstream_root + path, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=20) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)

    @staticmethod
    def send(handler: BaseHTTPRequestHandler, status: int, body: dict | bytes, headers: dict[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)


def teacher_config(base_url: str, model: str = "smollm2", **overrides) -> TeacherConfig:
    settings = dict(
        type="openai", base_url=base_url, model=model, api_key_env=KEY_ENV, max_tokens=8,
        max_retries=2, retry_wait_s=0.05, timeout_s=TIMEOUT_S,
    )
    return TeacherConfig(**{**settings, **overrides})


@pytest.fixture
def secret_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    return SECRET


@pytest.fixture(scope="module")
def served_smollm2(smollm2_gguf):
    pytest.importorskip("xllamacpp", reason="pip install xllamacpp")
    from llm2llm.teachers.local_server import LocalServer

    # One thread: llama.cpp's spinning worker threads slow down a hundredfold when another process holds the
    # cores (measured: 0.2 s -> 15-20 s per reply on 2 busy cores), and replies must beat a 2 s timeout here.
    server = LocalServer(smollm2_gguf, n_ctx=1024, n_parallel=2, n_threads=1).start()
    _warm_up(server)
    yield server
    server.stop()  # only once no request is in flight: FaultProxy.__exit__ waits for its forwards


def _warm_up(server) -> None:
    """One reply per slot before the clock matters: a slot's first reply can be slow."""
    body = json.dumps({"model": server.model_name, "messages": messages("warm-up"), "max_tokens": 8}).encode()

    def ask() -> None:
        request = urllib.request.Request(f"{server.base_url}/chat/completions", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()

    both_slots = [threading.Thread(target=ask) for _ in range(2)]
    for thread in both_slots:
        thread.start()
    for thread in both_slots:
        thread.join()


ONCE = {"429", "500", "slow", "malformed"}  # fail the first attempt, then let the retry through
EXPECTED_RETRIES = {"429": 1, "500": 1, "slow": 1, "malformed": 1, "length": 0, "no_usage": 0, "plain1": 0, "plain2": 0}


def faults_once(marker: str, attempt: int) -> str | None:
    if marker == "down":
        return "503"  # every attempt: this request fails for good
    if marker in ONCE:
        return marker if attempt == 1 else None
    return marker if marker in ("length", "no_usage") else None


@pytest.mark.slow
def test_every_fault_is_retried_counted_or_reported(tmp_path, secret_key, served_smollm2):
    markers = [*EXPECTED_RETRIES, "down"]
    requests = [TeacherRequest(messages(marker)) for marker in markers]
    cache = ReplyCache(tmp_path / "cache.sqlite")
    with FaultProxy(faults_once, upstream=served_smollm2.base_url) as proxy:
        teacher = build_teacher(teacher_config(proxy.base_url, served_smollm2.model_name, max_concurrency=2), seed=0)
        try:
            results = generate(teacher, requests, cache, max_concurrency=2)
            replies = {marker: reply for marker, (_, reply) in zip(markers, results)}

            assert all(reply is not None for reply in replies.values())  # every request finished
            for marker, retries in EXPECTED_RETRIES.items():
                assert replies[marker].error is None, (marker, replies[marker].error)
                assert replies[marker].retries == retries, marker
                assert proxy.attempts(marker) == retries + 1, marker
            # (Malformed JSON with status 200 is treated like a 5xx above: retried, never a crash.)
            # The 429's retry waited for Retry-After (1 s), not for the 0.05 s backoff.
            first, second = proxy.arrivals["429"]
            assert second - first >= 1.0
            assert replies["length"].finish_reason == "length"
            assert replies["plain1"].finish_reason in ("stop", "length")
            no_usage = replies["no_usage"]
            assert no_usage.tokens_estimated and no_usage.prompt_tokens == math.ceil(
                sum(len(m["content"]) for m in messages("no_usage")) / 4
            ) and no_usage.completion_tokens == math.ceil(len(no_usage.text) / 4)
            assert not replies["plain1"].tokens_estimated and replies["plain1"].prompt_tokens > 0

            down = replies["down"]  # 503 on every attempt: 1 + max_retries attempts, then an error reply
            assert down.text == "" and down.retries == 2 and proxy.attempts("down") == 3
            assert "HTTP 503" in down.error and down.error.endswith("after 3 attempts")

            # One cache row per successful reply, none for the failure; each row records its retries.
            with closing(sqlite3.connect(tmp_path / "cache.sqlite")) as connection:
                rows = dict(connection.execute("SELECT key, reply FROM replies"))
            assert set(rows) == {key for key, reply in results if reply.error is None} and len(rows) == len(EXPECTED_RETRIES)
            assert json.loads(rows[request_key(teacher, requests[0])])["retries"] == 1

            # Re-running resumes: only the failed request is sent again.
            before = proxy.attempts()
            again = generate(teacher, requests, cache, max_concurrency=2)
            assert proxy.attempts() - before == 3 and proxy.attempts("down") == 6
            assert all(reply.cached for (_, reply), marker in zip(again, markers) if marker != "down")
        finally:
            teacher.close()
    cache.close()


def test_a_refused_key_stops_at_once_and_stays_secret(tmp_path, secret_key, capsys, caplog):
    caplog.set_level(logging.DEBUG)  # the SDK and httpx log requests at debug level: the key must not be there either
    cache = ReplyCache(tmp_path / "cache.sqlite")
    requests = [TeacherRequest(messages(f"r{k}")) for k in range(4)]
    with FaultProxy(lambda marker, attempt: "401") as proxy:
        teacher = build_teacher(teacher_config(proxy.base_url, "gpt-x"), seed=0)
        with pytest.raises(TeacherError) as raised:
            generate(teacher, requests, cache, max_concurrency=1)
        teacher.close()
        assert proxy.attempts() == 1  # no retry, and nothing queued was sent after it
    message = str(raised.value)
    assert proxy.base_url in message and "'gpt-x'" in message and "HTTP 401" in message
    cache.close()

    shown = "".join(traceback.format_exception(raised.value)) + message
    captured = capsys.readouterr()
    for text in (shown, captured.out, captured.err, caplog.text):
        assert SECRET not in text
    assert "***" in message  # the echoed key was redacted, not dropped with the rest of the detail
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_too_many_failures_stop_the_run(tmp_path, secret_key):
    cache = ReplyCache(tmp_path / "cache.sqlite")
    requests = [TeacherRequest(messages(f"r{k}")) for k in range(4)]
    with FaultProxy(lambda marker, attempt: "500") as proxy:
        teacher = build_teacher(teacher_config(proxy.base_url, max_retries=0), seed=0)
        with pytest.raises(TeacherError, match=r"4 of 4 requests failed.*max_failure_ratio=0\.5.*HTTP 500.*re-running resumes"):
            generate(teacher, requests, cache, max_concurrency=2, max_failure_ratio=0.5)
        # The default ratio (1.0) never stops: the failures come back as error replies.
        results = generate(teacher, requests, cache, max_concurrency=2)
        teacher.close()
        assert proxy.attempts() == 8  # max_retries=0: one attempt per request and run
    assert all(reply.error.endswith(f"from {proxy.base_url} after 1 attempt") and reply.retries == 0 for _, reply in results)
    assert len(cache) == 0
    cache.close()


def test_tokens_are_estimated_when_the_server_sends_no_usage(secret_key):
    request = TeacherRequest(messages("canned"))
    with FaultProxy(lambda marker, attempt: "canned") as proxy:
        teacher = build_teacher(teacher_config(proxy.base_url), seed=0)
        reply = teacher.complete(request, seed=1)
        teacher.close()
    prompt_chars = sum(len(m["content"]) for m in request.messages)
    assert reply.text == CANNED_TEXT and reply.error is None and reply.tokens_estimated
    assert (reply.prompt_tokens, reply.completion_tokens) == (math.ceil(prompt_chars / 4), math.ceil(len(CANNED_TEXT) / 4))


def test_retry_after_is_capped_by_retry_max_wait(secret_key):
    def rate_limited_once(marker: str, attempt: int) -> str:
        return "429" if attempt == 1 else "canned"

    with FaultProxy(rate_limited_once) as proxy:
        teacher = build_teacher(teacher_config(proxy.base_url, retry_max_wait_s=0.2), seed=0)
        reply = teacher.complete(TeacherRequest(messages("capped")), seed=1)
        teacher.close()
    first, second = proxy.arrivals["capped"]
    assert reply.error is None and reply.retries == 1 and second - first < 0.9


def test_cache_rows_from_before_retries_were_counted_still_load(tmp_path):
    cache = ReplyCache(tmp_path / "cache.sqlite")
    old_row = {"text": "hi", "finish_reason": "stop", "prompt_tokens": 3, "completion_tokens": 1, "error": None}
    cache.connection.execute("INSERT INTO replies (key, model, request, reply) VALUES ('k', 'm', '{}', ?)", (json.dumps(old_row),))
    reply = cache.get("k")
    assert reply.text == "hi" and reply.retries == 0 and not reply.tokens_estimated and reply.cached
    cache.close()


def test_requests_overlap_through_the_async_client_up_to_max_concurrency(tmp_path, secret_key):
    requests = [TeacherRequest(messages("hold"), sample_index=k) for k in range(8)]
    cache = ReplyCache(tmp_path / "cache.sqlite")
    with FaultProxy(lambda marker, attempt: "hold") as proxy:
        teacher = build_teacher(teacher_config(proxy.base_url), seed=0)
        threads_before = threading.active_count()
        started = time.monotonic()
        results = generate(teacher, requests, cache, max_concurrency=3)
        elapsed = time.monotonic() - started
        time.sleep(0.1)  # the proxy's handler threads end just after their replies
        assert threading.active_count() == threads_before  # one event loop on this thread, no worker threads left
        teacher.close()
    assert proxy.peak == 3 and proxy.attempts() == 8  # bounded, and really concurrent
    assert elapsed < 8 * HOLD_S * 0.6  # 3 batches of HOLD_S, not 8
    assert [key for key, _ in results] == [request_key(teacher, r) for r in requests]  # in the order asked
    assert len(cache) == 8
    cache.close()


def test_a_fatal_error_sends_nothing_queued_and_keeps_the_reply_in_flight(tmp_path, secret_key):
    requests = [TeacherRequest(messages("hold")), TeacherRequest(messages("refused"))] + [
        TeacherRequest(messages("hold"), sample_index=k) for k in range(1, 5)]
    cache = ReplyCache(tmp_path / "cache.sqlite")
    with FaultProxy(lambda marker, attempt: "401" if marker == "refused" else "hold") as proxy:
        teacher = build_teacher(teacher_config(proxy.base_url), seed=0)
        with pytest.raises(TeacherError, match="HTTP 401"):
            generate(teacher, requests, cache, max_concurrency=2)
        teacher.close()
        assert proxy.attempts() == 2  # the two in flight; the four queued were never sent
    assert cache.get(request_key(teacher, requests[0])).text == CANNED_TEXT  # the reply in flight was awaited and kept
    cache.close()


def test_a_reply_without_choices_is_retried(secret_key):
    with FaultProxy(lambda marker, attempt: "no_choices" if attempt == 1 else "canned") as proxy:
        teacher = build_teacher(teacher_config(proxy.base_url), seed=0)
        reply = teacher.complete(TeacherRequest(messages("empty")), seed=1)
        teacher.close()
    assert reply.error is None and reply.text == CANNED_TEXT and reply.retries == 1 and proxy.attempts("empty") == 2


@pytest.mark.parametrize("fault", sorted(TOO_LONG))
def test_a_request_too_big_for_the_context_is_that_request_s_rejection(tmp_path, secret_key, fault):
    """Not a fatal refusal, not retried, and not a failure of the endpoint: the other requests go on."""
    requests = [TeacherRequest(messages("big")), *(TeacherRequest(messages("small"), sample_index=k) for k in range(3))]
    cache = ReplyCache(tmp_path / "cache.sqlite")
    with FaultProxy(lambda marker, attempt: fault if marker == "big" else "canned") as proxy:
        teacher = build_teacher(teacher_config(proxy.base_url), seed=0)
        results = generate(teacher, requests, cache, max_concurrency=2, max_failure_ratio=0.0)
        teacher.close()
    big = results[0][1]
    assert big.too_long and big.text == "" and big.error and proxy.attempts("big") == 1
    assert all(reply.error is None and reply.text == CANNED_TEXT for _, reply in results[1:])
    assert len(cache) == 3  # the refusal is not cached: a larger context (teacher.n_ctx) may take it later
    cache.close()
