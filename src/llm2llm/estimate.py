"""Forecast a run's teacher requests, tokens and cost before it starts: `llm2llm estimate CONFIG`.

The forecast is an upper bound, and says so: every seed example is wrong in every iteration that generates
(all but the last, which trains nobody), every generation reply uses all of `teacher.max_tokens`, and every reply
is verified. Baselines: AugGPT and one-shot ask for `augment.count` examples, again for each round at worst; EDA
and more real data ask the teacher nothing. Prompt tokens come from the real teacher and verifier prompts at 4 characters a token.
"""

from __future__ import annotations

import math
from typing import Any

from llm2llm.config import Config
from llm2llm.loop import load_data
from llm2llm.quality import verifier_messages, verifier_shots
from llm2llm.teachers import estimate_tokens, price


def _chars(messages: list[dict[str, str]]) -> int:
    return sum(len(message["content"]) for message in messages)


def estimate(config: Config) -> dict[str, Any]:
    seeds, _, task = load_data(config)
    augment = config.augment
    verify = task.verify_by_default if config.quality.verify is None else config.quality.verify
    rounds = config.loop.iterations - 1
    if augment.method in ("eda", "more_data"):
        requests, rounds = 0, 0  # no teacher at all
    elif augment.method == "auggpt" or augment.one_shot:
        # `count` examples asked for at once, and the shortfall again in each later round: at worst all of it.
        requests, rounds = augment.count * augment.max_rounds, 1
    else:
        requests = rounds * len(seeds) * config.teacher.samples_per_wrong
    # Every seed can be a parent: their mean prompt stands for a request's (a new example for its parent seed's).
    prompt = sum(estimate_tokens(_chars(task.teacher_messages(seed, context=seeds))) for seed in seeds) / len(seeds)
    generate = {"requests": requests, "prompt_tokens": math.ceil(requests * prompt),
                "completion_tokens": requests * config.teacher.max_tokens}
    verifier = config.quality.verifier or config.teacher
    verification = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}
    if verify and requests:
        shots = config.quality.verify_examples
        check = sum(estimate_tokens(_chars(verifier_messages(task, seed, verifier_shots(task, seeds, seed, shots)))) for seed in seeds) / len(seeds)
        verification = {"requests": requests, "prompt_tokens": math.ceil(requests * check), "completion_tokens": requests * task.max_new_tokens}
    costs = [price(config.teacher, generate["prompt_tokens"], generate["completion_tokens"]),
             price(verifier, verification["prompt_tokens"], verification["completion_tokens"])]
    return {
        "seeds": len(seeds),
        "generating_iterations": rounds,
        "generate": generate,
        "verify": verification,
        "total_tokens": sum(part["prompt_tokens"] + part["completion_tokens"] for part in (generate, verification)),
        "cost": None if None in costs else sum(costs),
        "assumption": "upper bound: every seed wrong in every generating iteration (or, for auggpt and one_shot, every "
        "reply rejected until the last of augment.max_rounds), every reply at teacher.max_tokens, prompts at 4 characters a token",
    }
