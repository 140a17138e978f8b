"""Real teachers, no mocks: a llama.cpp server on 127.0.0.1 (xllamacpp) and an in-process HF model.

SmolLM2-135M is a poor teacher, which is useful here: its replies exercise the rejection paths for real.
"""

from __future__ import annotations

import socket
import threading
import time
from urllib.parse import urlsplit

import pytest

from llm2llm.config import TeacherConfig, load_config
from llm2llm.data import read_jsonl
from llm2llm.errors import TeacherError
from llm2llm.loop import run
from llm2llm.teachers import ReplyCache, TeacherRequest, build_teacher, generate

pytestmark = pytest.mark.slow

MESSAGES = [
    {"role": "system", "content": "You write short customer support tickets."},
    {"role": "user", "content": "Write one ticket about a late parcel. Reply as:\nText: <ticket>\nLabel: shipping"},
]


def _port_open(base_url: str) -> bool:
    parts = urlsplit(base_url)
    with socket.socket() as sock:
        return sock.connect_ex((parts.hostname, parts.port)) == 0


def test_local_server_round_trip_and_cache(tmp_path, smollm2_gguf):
    pytest.importorskip("xllamacpp", reason="pip install xllamacpp")
    teacher = build_teacher(TeacherConfig(type="local", model=str(smollm2_gguf), max_tokens=40, max_concurrency=2, n_ctx=1024), seed=0)
    cache = ReplyCache(tmp_path / "cache.sqlite")
    requests = [TeacherRequest(MESSAGES, sample_index=k) for k in range(3)]
    try:
        first = generate(teacher, requests, cache, max_concurrency=2)
        base_url = teacher._server.base_url
        assert _port_open(base_url) and base_url.startswith("http://127.0.0.1:")
        for _, reply in first:
            assert reply.error is None and reply.text.strip()
            assert reply.finish_reason in ("stop", "length")
            assert reply.prompt_tokens > 20 and 0 < reply.completion_tokens <= 40  # usage from the server
        assert len({reply.text for _, reply in first}) >= 2  # sample_index changes the seed, so the samples
        assert len(cache) == 3
    finally:
        teacher.close()
    assert not _port_open(base_url)  # the server is stopped with the teacher

    # A second pass is answered from the cache alone: the server is not even started.
    again = build_teacher(TeacherConfig(type="local", model=str(smollm2_gguf), max_tokens=40, n_ctx=1024), seed=0)
    second = generate(again, requests, cache)
    assert again._server is None
    assert [r.text for _, r in second] == [r.text for _, r in first] and all(r.cached for _, r in second)
    cache.close()


def test_closing_the_local_teacher_waits_for_a_request_in_flight(smollm2_gguf):
    """As after Ctrl-C during generate: close() while a worker thread still waits for its reply."""
    pytest.importorskip("xllamacpp", reason="pip install xllamacpp")
    teacher = build_teacher(TeacherConfig(type="local", model=str(smollm2_gguf), max_tokens=64, n_ctx=1024), seed=0)
    teacher.complete(TeacherRequest(MESSAGES), seed=1)  # the server is up
    replies = []
    worker = threading.Thread(target=lambda: replies.append(teacher.complete(TeacherRequest(MESSAGES, sample_index=1), seed=2)))
    worker.start()
    while teacher._in_flight == 0 and worker.is_alive():
        time.sleep(0.01)
    closer = threading.Thread(target=teacher.close, daemon=True)  # daemon: a deadlock must fail the test, not hang pytest
    closer.start()
    closer.join(timeout=120)
    worker.join(timeout=5)
    assert not closer.is_alive(), "close() hung with a request in flight"
    assert replies and replies[0].error is None and replies[0].text  # the request in flight finished first


def test_openai_teacher_needs_its_key_and_never_shows_it(monkeypatch):
    monkeypatch.delenv("LLM2LLM_TEST_KEY", raising=False)
    teacher = build_teacher(TeacherConfig(type="openai", model="gpt-x", base_url="https://api.example.com/v1", api_key_env="LLM2LLM_TEST_KEY"), 0)
    with pytest.raises(TeacherError, match="LLM2LLM_TEST_KEY is not set"):
        teacher.complete(TeacherRequest(MESSAGES), seed=1)


def test_in_process_hf_teacher(smollm2_dir):
    teacher = build_teacher(TeacherConfig(type="hf", model="smollm2-135m-instruct", max_tokens=30, temperature=0.7), seed=0)
    one = teacher.complete(TeacherRequest(MESSAGES), seed=7)
    same = teacher.complete(TeacherRequest(MESSAGES), seed=7)
    assert one.text.strip() and one.text == same.text  # seeded sampling is reproducible
    assert one.prompt_tokens > 20 and 0 < one.completion_tokens <= 30
    assert one.finish_reason in ("stop", "length")


def test_loop_with_a_real_local_teacher(tmp_path, data_files, tiny_model_dir, smollm2_gguf):
    """Tiny student, real llama.cpp teacher, the default loop (out-of-fold errors, 6 requests each, the seed's form
    kept): every request ends accepted or rejected with a reason."""
    pytest.importorskip("xllamacpp", reason="pip install xllamacpp")
    seeds, test = data_files
    config = load_config(None, [
        f"output_dir={tmp_path}", f"data.seed_path={seeds}", f"data.test_path={test}", f"student.model={tiny_model_dir}",
        "student.epochs=1", f"teacher.model={smollm2_gguf}", "teacher.max_tokens=48", "teacher.n_ctx=1024",
        "loop.iterations=2",
    ])
    store = run(config)
    metrics = store.metrics(0)
    assert metrics["requests"] == 6 * metrics["wrong"] > 0 and 0 <= metrics["oof_accuracy"] < 1
    assert metrics["accepted"] + metrics["rejected"] == metrics["requests"]
    assert sum(metrics["rejected_by_reason"].values()) == metrics["rejected"]
    assert metrics["teacher_completion_tokens"] > 0
    for row in read_jsonl(store.root / "iter_000" / "rejected.jsonl"):
        assert row["reason"] and row["prompt_hash"]
    assert store.state()["finished"]


def test_a_prompt_beyond_the_local_server_s_context_is_rejected_not_fatal(tmp_path, smollm2_gguf):
    """llama.cpp answers HTTP 400 'exceeds the available context size': that request alone is refused."""
    pytest.importorskip("xllamacpp", reason="pip install xllamacpp")
    teacher = build_teacher(TeacherConfig(type="local", model=str(smollm2_gguf), max_tokens=8, n_ctx=256), seed=0)
    cache = ReplyCache(tmp_path / "cache.sqlite")
    too_big = [{"role": "user", "content": "my parcel is late " * 150}]
    try:
        (_, refused), (_, answered) = generate(teacher, [TeacherRequest(too_big), TeacherRequest(MESSAGES)], cache,
                                               max_failure_ratio=0.0)
    finally:
        teacher.close()
        cache.close()
    assert refused.too_long and "exceeds the available context size" in refused.error
    assert answered.error is None and answered.text
