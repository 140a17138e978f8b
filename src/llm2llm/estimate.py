"""Forecast a run's teacher requests, tokens and cost before it starts: `llm2llm estimate CONFIG`.

The forecast is an upper bound, and says so: every seed example is wrong in every iteration that generates
(all but the last, which trains nobody), every generation reply uses all of `teacher.max_tokens`, and every reply
is verified. Prompt tokens come from the real teacher and verifier prompts at 4 characters a token.
"""

from __future__ import annotations

from typing import Any

from llm2llm.config import Config
from llm2llm.loop import load_data
from llm2llm.quality import verifier_messages, verifier_shots
from llm2llm.teachers import estimate_tokens, price


def _chars(messages: list[dict[str, str]]) -> int:
    return sum(len(message["content"]) for message in messages)


def estimate(config: Config) -> dict[str, Any]:
    seeds, _, task = load_data(config)
    rounds = config.loop.iterations - 1
    samples = config.teacher.samples_per_wrong
    verify = task.verify_by_default if config.quality.verify is None else config.quality.verify
    per_round_prompt = sum(estimate_tokens(_chars(task.teacher_messages(seed, context=seeds))) for seed in seeds) * samples
    generate = {
        "requests": rounds * len(seeds) * samples,
        "prompt_tokens": rounds * per_round_prompt,
        "completion_tokens": rounds * len(seeds) * samples * config.teacher.max_tokens,
    }
    verifier = config.quality.verifier or config.teacher
    verification = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}
    if verify:
        # A new example is about as long as its parent seed: the seed stands in for it.
        per_round = sum(
            estimate_tokens(_chars(verifier_messages(task, seed, verifier_shots(task, seeds, seed, config.quality.verify_examples))))
            for seed in seeds
        ) * samples
        verification = {
            "requests": generate["requests"],
            "prompt_tokens": rounds * per_round,
            "completion_tokens": generate["requests"] * task.max_new_tokens,
        }
    costs = [price(config.teacher, generate["prompt_tokens"], generate["completion_tokens"]),
             price(verifier, verification["prompt_tokens"], verification["completion_tokens"])]
    return {
        "seeds": len(seeds),
        "generating_iterations": rounds,
        "generate": generate,
        "verify": verification,
        "total_tokens": sum(part["prompt_tokens"] + part["completion_tokens"] for part in (generate, verification)),
        "cost": None if None in costs else sum(costs),
        "assumption": "upper bound: every seed wrong in every generating iteration, every reply at teacher.max_tokens, "
        "prompts at 4 characters a token",
    }
