"""`llm2llm estimate`: an upper bound on teacher requests, tokens and cost, from the real prompts."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from llm2llm.cli import app
from llm2llm.config import load_config
from llm2llm.estimate import estimate
from llm2llm.loop import load_data
from llm2llm.teachers import estimate_tokens

from conftest import SEED_ROWS


@pytest.fixture
def config(data_files):
    seeds, test = data_files
    return load_config(None, [f"data.seed_path={seeds}", f"data.test_path={test}", "loop.iterations=4",
                              "teacher.samples_per_wrong=2", "teacher.max_tokens=100",
                              "teacher.price_input_per_1m=1", "teacher.price_output_per_1m=10"])


def test_the_forecast_counts_every_seed_in_every_generating_iteration(config):
    result = estimate(config)
    requests = 3 * len(SEED_ROWS) * 2  # the last of 4 iterations does not generate
    assert result["generate"]["requests"] == requests == result["verify"]["requests"]
    assert result["generate"]["completion_tokens"] == requests * 100
    seeds, _, task = load_data(config)
    one_round = sum(estimate_tokens(sum(len(m["content"]) for m in task.teacher_messages(s, context=seeds))) for s in seeds)
    assert result["generate"]["prompt_tokens"] == 3 * 2 * one_round
    prompt = result["generate"]["prompt_tokens"] + result["verify"]["prompt_tokens"]
    completion = result["generate"]["completion_tokens"] + result["verify"]["completion_tokens"]
    assert result["cost"] == pytest.approx((prompt * 1 + completion * 10) / 1e6)
    assert result["total_tokens"] == prompt + completion


def test_no_verification_no_prices(config):
    result = estimate(config.model_copy(update={
        "quality": config.quality.model_copy(update={"verify": False}),
        "teacher": config.teacher.model_copy(update={"price_input_per_1m": None}),
    }))
    assert result["verify"]["requests"] == 0 and result["cost"] is None


def test_estimate_command_prints_the_bound_and_its_assumption(data_files):
    seeds, test = data_files
    config_file = Path(seeds).with_name("c.yaml")
    config_file.write_text(f"data:\n  seed_path: {seeds}\n  test_path: {test}\nloop:\n  iterations: 3\n")
    outcome = CliRunner().invoke(app, ["estimate", str(config_file)])
    assert outcome.exit_code == 0, outcome.output
    # The default loop asks 6 times for each seed it selects, in each of the 2 generating iterations.
    assert f"{2 * 6 * len(SEED_ROWS)}" in outcome.output and "upper bound" in outcome.output
    assert "set teacher.price_*_per_1m" in outcome.output


def test_baselines_ask_for_their_count_or_nothing(config):
    def requests(**augment):
        loop = {"iterations": 1} if augment.get("method", "llm2llm") != "llm2llm" else {"iterations": 2}
        changed = config.model_copy(update={"augment": config.augment.model_copy(update=augment),
                                            "loop": config.loop.model_copy(update=loop)})
        return estimate(changed)["generate"]["requests"]

    assert requests(method="eda", count=7) == requests(method="more_data", count=7) == 0
    assert requests(method="auggpt", count=7, max_rounds=3) == 21  # every round may have to ask for all 7 again
    assert requests(one_shot=True, count=5, max_rounds=2) == 10
