"""Config: defaults, YAML + overrides, errors that name the key, every shipped config loads."""

import re
from pathlib import Path

import pytest

from llm2llm.config import Config, load_config
from llm2llm.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_defaults_are_the_offline_demo():
    config = load_config()
    assert config.student.model == "smollm2-135m-instruct"
    assert config.teacher.type == "local"
    assert config.data.seed_path == "demo:seeds.jsonl"


def test_overrides_win_over_yaml_and_parse_types(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: a\nloop:\n  iterations: 5\nstudent:\n  finetune: full\n")
    config = load_config(path, ["loop.iterations=3", "student.lora.target_modules=[q_proj, v_proj]", "eval.test_every_iteration=true"])
    assert config.name == "a"
    assert config.loop.iterations == 3
    assert config.student.finetune == "full"
    assert config.student.lora.target_modules == ["q_proj", "v_proj"]
    assert config.eval.test_every_iteration is True


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["student.lorra.r=4"], "student.lorra: unknown key"),
        (["loop.iterations=0"], "loop.iterations: Input should be greater than or equal to 1"),
        (["student.finetune=qlora"], "student.finetune"),
        (["nonsense"], "not of the form key.sub=value"),
        (["name.sub=1"], "name: Input should be a valid string"),
    ],
)
def test_bad_overrides_name_the_key(overrides, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_config(None, overrides)


@pytest.mark.parametrize("override, suggestion", [
    ("student.lerning_rate=0.1", "student.learning_rate"),  # a typo
    ("student.iterations=3", "loop.iterations"),  # the right name in the wrong section
    ("iterations=3", "loop.iterations"),
    ("student.lorra.r=4", "student.lora"),  # a section
    ("quality.verifier.modle=x", "quality.verifier.model"),  # inside an optional section
])
def test_an_unknown_key_suggests_the_closest_real_one(override, suggestion):
    with pytest.raises(ConfigError, match=re.escape(f"unknown key; did you mean {suggestion}?")):
        load_config(None, [override])


def test_no_suggestion_when_nothing_is_close():
    with pytest.raises(ConfigError, match=r"loop\.foo: unknown key \("):
        load_config(None, ["loop.foo=1"])


def test_key_reference_marks_what_a_config_changes(tmp_path):
    from llm2llm.config import key_reference

    path = tmp_path / "c.yaml"
    path.write_text("student:\n  finetune: full\n")
    changed = {key: value for key, _, value, _ in key_reference(load_config(path, ["loop.iterations=4"])) if value is not None}
    assert changed == {"student.finetune": "'full'", "loop.iterations": "4"}


def test_bad_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nstudent:\n  model: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+: not valid YAML"):
        load_config(path)


def test_unknown_key_in_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("teacher:\n  modle: gpt\n")
    with pytest.raises(ConfigError, match=r"teacher\.modle: unknown key"):
        load_config(path)


def test_relative_data_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(None, ["data.seed_path=seeds.jsonl", "output_dir=out"])
    assert config.data.seed_path == str(tmp_path / "seeds.jsonl")
    assert config.run_dir == tmp_path / "out" / "demo"
    assert config.data.test_path == "demo:test.jsonl"


def test_paths_in_a_config_file_are_relative_to_the_file(tmp_path, monkeypatch):
    folder, elsewhere = tmp_path / "project" / "configs", tmp_path / "elsewhere"
    (folder / "student").mkdir(parents=True)
    elsewhere.mkdir()
    path = folder / "c.yaml"
    path.write_text("output_dir: out\ndata:\n  seed_path: seeds.csv\n  test_path: ../data/test.jsonl\n"
                    "augment:\n  pool_path: hf:trec@train\nstudent:\n  model: student\nteacher:\n  model: qwen2.5-coder-0.5b-instruct\n"
                    "quality:\n  verifier:\n    model: student\n")
    monkeypatch.chdir(elsewhere)  # run from another directory
    config = load_config(path)
    assert config.data.seed_path == str(folder / "seeds.csv")
    assert config.data.test_path == str(tmp_path / "project" / "data" / "test.jsonl")
    assert config.student.model == config.quality.verifier.model == str(folder / "student")
    assert config.teacher.model == "qwen2.5-coder-0.5b-instruct" and config.augment.pool_path == "hf:trec@train"
    assert config.run_dir == elsewhere / "out" / "demo"  # outputs go where you run it
    # A command-line override names a path from the working directory.
    assert load_config(path, ["data.seed_path=mine.jsonl"]).data.seed_path == str(elsewhere / "mine.jsonl")


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    first_line = path.read_text().splitlines()[0]
    assert first_line.startswith("# llm2llm run configs/"), "each config opens with the command that runs it"
    assert isinstance(load_config(path), Config)


def test_a_separate_verifier_takes_the_teacher_keys():
    config = load_config(None, ["quality.verifier.type=openai", "quality.verifier.model=gpt-4o-mini"])
    assert config.quality.verifier.model == "gpt-4o-mini" and config.quality.verifier.api_key_env == "OPENAI_API_KEY"
    assert load_config(None).quality.verifier is None  # default: the teacher verifies
    with pytest.raises(ConfigError, match="quality.verifier.modle: unknown key"):
        load_config(None, ["quality.verifier.modle=x"])


def test_a_cost_budget_needs_prices():
    with pytest.raises(ConfigError, match="budget.max_cost needs teacher.price_input_per_1m"):
        load_config(None, ["budget.max_cost=5"])
    config = load_config(None, ["budget.max_cost=5", "teacher.price_input_per_1m=0.15", "teacher.price_output_per_1m=0.6"])
    assert config.budget.max_cost == 5


@pytest.mark.parametrize(
    "text, message",
    [
        ("", r"c\.yaml: the config file is empty\. Run `llm2llm demo`"),
        ("# name: x\n", r"c\.yaml: the config file is empty"),
        ("name: x\nstudent:\n  epochs: 2\n  epochs: 3\n", r"c\.yaml:4: not valid YAML \(duplicate key 'epochs' \(first given on line 3\)"),
        ("name: x\nname: y\n", r"c\.yaml:2: not valid YAML \(duplicate key 'name'"),
    ],
    ids=["empty", "comments-only", "duplicate-nested", "duplicate-top"],
)
def test_empty_files_and_duplicate_keys_are_errors(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_the_same_key_in_two_sections_and_yaml_merges_are_fine(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("teacher: &t\n  model: a\n  max_tokens: 64\nquality:\n  verifier:\n    <<: *t\n    model: b\n")
    config = load_config(path)
    assert config.teacher.model == "a" and config.quality.verifier.model == "b" and config.quality.verifier.max_tokens == 64


def test_the_default_loop_is_the_one_that_won_and_the_papers_is_one_switch_away():
    default = load_config()  # out-of-fold errors, 3 requests a parent, the seed's form kept (docs/results.md)
    assert (default.select.by, default.teacher.samples_per_wrong, default.task.teacher_keep_form) == ("out_of_fold", 6, True)
    paper = load_config(None, ["select.by=train_errors"])  # the paper's loop: 1 request, new wording
    assert (paper.teacher.samples_per_wrong, paper.task.teacher_keep_form) == (1, False)
    # A key set by hand stays as set, either way; the baselines ask as the paper does.
    assert load_config(None, ["select.by=train_errors", "teacher.samples_per_wrong=2"]).teacher.samples_per_wrong == 2
    assert load_config(None, ["task.teacher_keep_form=false"]).task.teacher_keep_form is False
    auggpt = load_config(None, ["augment.method=auggpt", "augment.count=5", "loop.iterations=1"])
    assert (auggpt.teacher.samples_per_wrong, auggpt.task.teacher_keep_form) == (1, False)
    # Resolved once: the values a run freezes in its config.yaml read back the same.
    assert Config.model_validate(default.model_dump(mode="json")) == default


def test_runs_named_before_the_default_changed_keep_their_names():
    from llm2llm.compare import config_hash
    from llm2llm.data import content_hash

    # A compare run's name hashes what differs from the paper's loop, the defaults when the finished runs were named.
    assert config_hash(load_config(None, ["select.by=train_errors"])) == content_hash({}, length=8)
    spelled = ["select.by=out_of_fold", "teacher.samples_per_wrong=6", "task.teacher_keep_form=true"]
    assert config_hash(load_config(None)) == config_hash(load_config(None, spelled))
    # The default's 3 requests became 6: a finished run of the old default keeps its name, the new default gets its own.
    old_default = ["select.by=out_of_fold", "teacher.samples_per_wrong=3", "task.teacher_keep_form=true"]
    assert config_hash(load_config(None, old_default)) == "5acd6aeb" != config_hash(load_config(None))
