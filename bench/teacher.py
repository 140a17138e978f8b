"""Teacher speed on this machine: local llama.cpp throughput by concurrency, and what a fully cached re-run costs.

    python bench/teacher.py [--model qwen2.5-coder-0.5b-instruct] [--concurrency 1 2 4 8] [--requests 16]
                            [--max-tokens 64] [--cached 500]

Throughput rows: for each concurrency c, a fresh local teacher (its own server with c slots) answers --requests
distinct short prompts through `generate` with an empty cache, so every request reaches the server. The server
start and one warm-up request are outside the timing. Tokens/s counts the completion tokens the server reports.
Cache row: --cached requests answered once by an in-file fake teacher, then the same requests again through
`generate`; none of the second pass may reach the teacher.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from llm2llm.config import TeacherConfig  # noqa: E402
from llm2llm.errors import ModelError  # noqa: E402
from llm2llm.models import resolve_gguf  # noqa: E402
from llm2llm.teachers import ReplyCache, TeacherReply, TeacherRequest, build_teacher, generate  # noqa: E402


def default_model() -> str:
    """The 0.5B Qwen coder where its package (or an assembled copy in the cache) is here, else the bundled SmolLM2."""
    try:
        resolve_gguf("qwen2.5-coder-0.5b-instruct")
        return "qwen2.5-coder-0.5b-instruct"
    except ModelError:
        return "smollm2-135m-instruct"


def topic_requests(n: int, round: int) -> list[TeacherRequest]:
    return [
        TeacherRequest(messages=[{"role": "user", "content": f"Write a two-sentence customer support ticket about problem number {k} with an online order."}], round=round)
        for k in range(n)
    ]


def local_throughput(model: str, concurrency: int, n_requests: int, max_tokens: int, workdir: Path) -> dict:
    """One server with `concurrency` slots; timed from the first to the last of n uncached requests."""
    config = TeacherConfig(
        type="local", model=model, max_tokens=max_tokens, max_concurrency=concurrency, n_ctx=1024, temperature=0.7
    )
    teacher = build_teacher(config, seed=0)
    try:
        # Starts the server and warms it; round -1 keeps this prompt apart from the timed ones.
        teacher.complete(topic_requests(1, round=-1)[0], seed=0)
        cache = ReplyCache(workdir / f"cache-c{concurrency}.sqlite")
        started = time.perf_counter()
        # The same requests (and seeds) at every level, so each level does comparable work; fresh caches keep them uncached.
        replies = generate(teacher, topic_requests(n_requests, round=1), cache, max_concurrency=concurrency)
        seconds = time.perf_counter() - started
        cache.close()
    finally:
        # generate returns only after every request finished, so no request is in flight when the server stops.
        teacher.close()
    return {
        "seconds": seconds,
        "requests": n_requests,
        "completion_tokens": sum(reply.completion_tokens for _, reply in replies if reply.error is None),
        "failures": sum(reply.error is not None for _, reply in replies),
        "cached": sum(reply.cached for _, reply in replies),
    }


class CountingTeacher:
    """A fake teacher that answers at once and counts how many requests reached it."""

    name = "counting-fake"

    def __init__(self) -> None:
        self.calls = 0

    def params(self) -> dict:
        return {"temperature": 0.0, "top_p": 1.0, "max_tokens": 16, "seed": 0}

    def complete(self, request: TeacherRequest, seed: int) -> TeacherReply:
        self.calls += 1
        return TeacherReply(text=f"reply to {request.messages[-1]['content']}", finish_reason="stop")

    def close(self) -> None:
        pass


def cached_rerun(n_requests: int, workdir: Path) -> dict:
    teacher = CountingTeacher()
    cache = ReplyCache(workdir / "cache-fake.sqlite")
    requests = topic_requests(n_requests, round=0)
    started = time.perf_counter()
    generate(teacher, requests, cache)
    fill_seconds = time.perf_counter() - started
    calls_to_fill = teacher.calls
    started = time.perf_counter()
    replies = generate(teacher, requests, cache)
    rerun_seconds = time.perf_counter() - started
    cache.close()
    return {
        "entries": n_requests,
        "fill_seconds": fill_seconds,
        "calls_to_fill": calls_to_fill,
        "rerun_seconds": rerun_seconds,
        "reached_teacher": teacher.calls - calls_to_fill,
        "cached": sum(reply.cached for _, reply in replies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="bundled alias or .gguf path (default: qwen2.5-coder-0.5b-instruct "
                        "when it resolves, else smollm2-135m-instruct)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--requests", type=int, default=16, help="timed requests per concurrency level")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--cached", type=int, default=500, help="requests in the cache re-run")
    args = parser.parse_args()
    model = args.model or default_model()
    resolve_gguf(model)  # fail here, with the install hint, rather than inside the first server start

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        throughput = Table(title=f"Local teacher · {model} · {args.requests} requests · max_tokens {args.max_tokens}",
                           padding=(0, 1))
        for header in ("concurrency", "seconds", "requests/s", "completion tok/s", "tokens", "speed-up", "failures"):
            throughput.add_column(header, justify="right")
        baseline = None
        for concurrency in args.concurrency:
            result = local_throughput(model, concurrency, args.requests, args.max_tokens, workdir)
            requests_per_s = result["requests"] / result["seconds"]
            baseline = baseline or (requests_per_s if concurrency == 1 else None)
            throughput.add_row(
                str(concurrency), f"{result['seconds']:.1f}", f"{requests_per_s:.2f}",
                f"{result['completion_tokens'] / result['seconds']:.1f}", str(result["completion_tokens"]),
                f"{requests_per_s / baseline:.2f}x" if baseline else "—",
                str(result["failures"]) + (f" ({result['cached']} cached!)" if result["cached"] else ""),
            )
        Console(width=160).print(throughput)

        cache = cached_rerun(args.cached, workdir)
        reuse = Table(title="Reply cache · fake teacher", padding=(0, 1))
        for header in ("entries", "fill s", "calls to fill", "re-run s", "re-run requests/s", "reached teacher", "served from cache"):
            reuse.add_column(header, justify="right")
        reuse.add_row(
            str(cache["entries"]), f"{cache['fill_seconds']:.2f}", str(cache["calls_to_fill"]),
            f"{cache['rerun_seconds']:.3f}", f"{cache['entries'] / cache['rerun_seconds']:.0f}",
            str(cache["reached_teacher"]), str(cache["cached"]),
        )
        Console(width=160).print(reuse)


if __name__ == "__main__":
    main()
