"""Teacher speed on this machine: local llama.cpp throughput by concurrency, what a fully cached re-run costs, and
what the shared-prefix-first prompt layout saves.

    python bench/teacher.py [--model qwen2.5-coder-0.5b-instruct] [--concurrency 1 2 4 8] [--requests 16]
                            [--max-tokens 64] [--cached 500] [--layout-requests 24] [--only-layout]

Throughput rows: for each concurrency c, a fresh local teacher (its own server with c slots) answers --requests
distinct short prompts through `generate` with an empty cache, so every request reaches the server. The server
start and one warm-up request are outside the timing. Tokens/s counts the completion tokens the server reports.
Cache row: --cached requests answered once by an in-file fake teacher, then the same requests again through
`generate`; none of the second pass may reach the teacher.
Layout rows: the loop's real classification teacher requests (the demo task, --layout-requests parents) at
concurrency 2, greedy, each layout on a fresh server: the old layout (the seed first, then the label's examples;
requests in seed order) against the current one (shared part first, the seed last; requests grouped by label).
The server reports the prompt tokens it reused from its cache. The current layout's replies are checked against
the same prompts sent one at a time with the server's prompt cache off: reuse must not change a greedy reply.
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

from llm2llm.config import TaskConfig, TeacherConfig  # noqa: E402
from llm2llm.data import Example, load_examples  # noqa: E402
from llm2llm.tasks import build_task  # noqa: E402
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


def old_layout(task, wrong: Example, context: list[Example]) -> list[dict]:
    """The teacher request as llm2llm wrote it before the reorder: the seed first, then the label's examples."""
    system, user = task.teacher_messages(wrong, context)
    shown = user["content"].partition("Misclassified example:")[0]
    old_user = f"Misclassified example:\nText: {wrong.text}\nLabel: {wrong.label}\n" + (f"\n{shown.rstrip()}\n" if shown else "")
    old_user += f"\nWrite one new example labelled {wrong.label}."
    return [{**system, "content": system["content"].replace("the example at the end", "the example below")},
            {"role": "user", "content": old_user}]


def layout_throughput(model: str, n_parents: int, max_tokens: int, workdir: Path) -> list[dict]:
    seeds = load_examples("demo:seeds.jsonl", text_field="text", label_field="label", origin="seed")
    task = build_task(TaskConfig(), seeds)
    parents = (seeds * (n_parents // len(seeds) + 1))[:n_parents]
    layouts = {
        "old: seed first, seed order": [TeacherRequest(messages=old_layout(task, p, seeds), round=k) for k, p in enumerate(parents)],
        "new: shared first, by label": [TeacherRequest(messages=task.teacher_messages(p, seeds), round=k)
                                        for k, p in sorted(enumerate(parents), key=lambda kp: kp[1].label)],
    }
    results = []
    for name, requests in layouts.items():
        config = TeacherConfig(type="local", model=model, max_tokens=max_tokens, max_concurrency=2, n_ctx=2048, temperature=0.0)
        teacher = build_teacher(config, seed=0)
        try:
            teacher.complete(topic_requests(1, round=-1)[0], seed=0)  # start and warm the server, outside the timing
            cache = ReplyCache(workdir / f"cache-layout-{len(results)}.sqlite")
            started = time.perf_counter()
            replies = generate(teacher, requests, cache, max_concurrency=2)
            seconds = time.perf_counter() - started
            cache.close()
            same = None
            if name.startswith("new"):  # greedy replies with the server's prompt cache off, one at a time
                from openai import OpenAI

                base_url, served = teacher._endpoint()
                client = OpenAI(base_url=base_url, api_key="local")
                fresh = [client.chat.completions.create(model=served, messages=r.messages, temperature=0.0, max_tokens=max_tokens,
                                                        seed=0, extra_body={"cache_prompt": False}).choices[0].message.content
                         for r in requests[:8]]
                same = sum(a == b.text for a, (_, b) in zip(fresh, replies[:8]))
        finally:
            teacher.close()
        results.append({"layout": name, "seconds": seconds, "requests": len(requests),
                        "prompt_tokens": sum(r.prompt_tokens for _, r in replies),
                        "cached_prompt_tokens": sum(r.cached_prompt_tokens for _, r in replies), "same_as_uncached": same})
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="bundled alias or .gguf path (default: qwen2.5-coder-0.5b-instruct "
                        "when it resolves, else smollm2-135m-instruct)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--requests", type=int, default=16, help="timed requests per concurrency level")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--cached", type=int, default=500, help="requests in the cache re-run")
    parser.add_argument("--layout-requests", type=int, default=24, help="teacher requests per prompt layout")
    parser.add_argument("--only-layout", action="store_true", help="run the layout rows only")
    args = parser.parse_args()
    model = args.model or default_model()
    resolve_gguf(model)  # fail here, with the install hint, rather than inside the first server start

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        layout = Table(title=f"Prompt layout · {model} · {args.layout_requests} loop requests · concurrency 2 · greedy",
                       padding=(0, 1))
        for header in ("layout", "seconds", "requests/s", "prompt tokens", "reused from cache", "speed-up", "greedy replies = uncached"):
            layout.add_column(header, justify="right")
        rows = layout_throughput(model, args.layout_requests, args.max_tokens, workdir)
        for row in rows:
            layout.add_row(row["layout"], f"{row['seconds']:.1f}", f"{row['requests'] / row['seconds']:.2f}", str(row["prompt_tokens"]),
                           f"{row['cached_prompt_tokens']} ({100 * row['cached_prompt_tokens'] / max(row['prompt_tokens'], 1):.0f}%)",
                           f"{rows[0]['seconds'] / row['seconds']:.2f}x",
                           "—" if row["same_as_uncached"] is None else f"{row['same_as_uncached']} of 8")
        Console(width=160).print(layout)
        if args.only_layout:
            return
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
