"""Run directory: a resumed run must use the frozen config, except for keys that do not change results."""

import pytest
import yaml

from llm2llm.config import load_config
from llm2llm.errors import RunStateError
from llm2llm.runstore import RunStore


def test_changed_config_is_refused_with_a_diff(tmp_path):
    store = RunStore(tmp_path / "run")
    store.open(load_config(None, ["student.epochs=3"]))
    with pytest.raises(RunStateError) as caught:
        store.open(load_config(None, ["student.epochs=4"]))
    message = str(caught.value)
    assert "changed: student.epochs" in message
    assert "-  epochs: 3" in message and "+  epochs: 4" in message
    assert "--force" in message
    store.open(load_config(None, ["student.epochs=4"]), force=True)
    assert store.config().student.epochs == 4


def test_speed_only_changes_and_more_iterations_are_allowed(tmp_path):
    store = RunStore(tmp_path / "run")
    store.open(load_config(None, []))
    store.open(load_config(None, ["loop.iterations=5", "teacher.max_concurrency=4", "student.eval_batch_size=64"]))
    assert store.config().loop.iterations == 5


def test_stage_markers_and_metrics(tmp_path):
    store = RunStore(tmp_path / "run")
    store.open(load_config(None, []))
    assert not store.done(0, "finetune")
    store.mark_done(0, "finetune", {"train_examples": 3, "seconds": 1.5})
    store.mark_done(0, "evaluate", {"seed_accuracy": 0.5, "seconds": 0.5})
    assert store.done(0, "finetune") and not store.done(1, "finetune")
    metrics = store.metrics(0)
    assert metrics["seed_accuracy"] == 0.5 and metrics["stage_seconds"] == {"finetune": 1.5, "evaluate": 0.5}
    assert not list((tmp_path / "run").glob("**/*.tmp"))  # atomic writes leave no temporaries


def test_a_run_from_an_older_version_resumes_when_new_keys_keep_their_defaults(tmp_path):
    store = RunStore(tmp_path / "run")
    store.open(load_config(None))
    frozen = yaml.safe_load((store.root / "config.yaml").read_text())
    del frozen["quality"], frozen["loop"]["patience"]  # as written by a version without these keys
    (store.root / "config.yaml").write_text(yaml.safe_dump(frozen))
    store.open(load_config(None))  # resumes
    with pytest.raises(RunStateError, match="changed: quality.verify"):
        store.open(load_config(None, ["quality.verify=false"]))
