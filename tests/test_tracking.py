"""report_to: TensorBoard, W&B (offline) and MLflow (local store) get the config, every iteration's metrics and the
training loss per step, read back with each tool's own reader; a tracker added later catches up, and nothing is
logged twice."""

from __future__ import annotations

import importlib.util
import json
import os
import struct

import pytest

from llm2llm.config import load_config
from llm2llm.errors import ConfigError
from llm2llm.loop import run
from llm2llm.runstore import RunStore

from scripted import ScriptedTeacher


def require(package: str) -> None:
    """Skip when an optional tracker is not installed here; under CI (LLM2LLM_CI=1, set by .ci/run, which installs
    the test extra) a missing one fails instead of skipping."""
    if importlib.util.find_spec(package) is None:
        message = f"{package} is not installed (pip install 'llm2llm[{package}]')"
        if os.environ.get("LLM2LLM_CI"):
            pytest.fail(message)
        pytest.skip(message)


TRACKERS = [name for name in ("tensorboard", "wandb", "mlflow") if importlib.util.find_spec(name)]


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory, tiny_model_dir):
    """A two-iteration run of the tiny student, logged to every tracker installed here; W&B and MLflow kept inside the
    test's folder (their cache and config directories too), offline."""
    from conftest import SEED_ROWS, TEST_ROWS, write_jsonl

    root = tmp_path_factory.mktemp("tracked")
    seeds, test = write_jsonl(root / "seeds.jsonl", SEED_ROWS), write_jsonl(root / "test.jsonl", TEST_ROWS)
    with pytest.MonkeyPatch.context() as patch:
        for variable in ("WANDB_MODE", "WANDB_API_KEY", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
            patch.delenv(variable, raising=False)
        for variable in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR", "XDG_CONFIG_HOME",
                         "XDG_CACHE_HOME"):
            patch.setenv(variable, str(root / "home"))
        patch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")  # no network, and nothing written under ~/.config
        config = load_config(None, [
            f"data.seed_path={seeds}", f"data.test_path={test}", f"student.model={tiny_model_dir}", "student.finetune=full",
            "student.epochs=2", "student.batch_size=4", "teacher.type=scripted:ScriptedTeacher", "loop.iterations=2",
            "select.by=train_errors",
            f"output_dir={root / 'runs'}", "name=tracked", f"report_to=[{', '.join(TRACKERS)}]"])
        ScriptedTeacher.calls = []
        store = run(config)
    return store


def test_tensorboard_event_files_hold_metrics_loss_and_config(tracked_run):
    require("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    store = tracked_run
    events = EventAccumulator(str(store.root / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    seed_accuracy = events.Scalars("iteration/seed_accuracy")
    assert [(e.step, round(e.value, 4)) for e in seed_accuracy] == [(i, round(store.metrics(i)["seed_accuracy"], 4)) for i in (0, 1)]
    assert [e.step for e in events.Scalars("iteration/test_accuracy")] == [1]  # tested after the last iteration only
    assert [e.step for e in events.Scalars("iteration/accepted")] == [0]
    # Iteration 0's student was pruned (keep_checkpoints=last); its loss per step was kept and logged.
    assert not (store.root / "iter_000" / "student").exists()
    for i in (0, 1):
        losses = events.Scalars(f"train_loss/iter_{i:03d}")
        assert [(e.step, round(e.value, 4)) for e in losses] == [(row["step"], row["loss"]) for row in store.train_log(i)]
        assert len(losses) == store.metrics(i)["train_steps"] > 0
    config_text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "report_to:" in config_text and "finetune: full" in config_text


def _wandb_records(path):
    """The records of an offline W&B run file, read with W&B's own protobuf schema (the file is a LevelDB-style log
    of 32 KiB blocks, each record a 7-byte header: checksum, length, type)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, position, partial = [], 7, b""
    while position + 7 <= len(data):
        left = 32768 - position % 32768
        if left < 7:  # a block's tail too short for a header is padding
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        if kind == 0 and length == 0:
            break
        partial += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(partial)
            records.append(record)
            partial = b""
    return records


def test_wandb_offline_run_holds_metrics_loss_and_config(tracked_run):
    require("wandb")
    store = tracked_run
    [run_file] = (store.root / "wandb").glob("offline-run-*/run-*.wandb")
    records = _wandb_records(run_file)
    history = [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    by_iteration = {row["iteration"]: row for row in history if "iteration/seed_accuracy" in row}
    assert {i: round(row["iteration/seed_accuracy"], 4) for i, row in by_iteration.items()} == \
        {i: round(store.metrics(i)["seed_accuracy"], 4) for i in (0, 1)}
    losses = [(row["train_step"], row["train_loss/iter_001"]) for row in history if "train_loss/iter_001" in row]
    assert losses == [(row["step"], row["loss"]) for row in store.train_log(1)]
    [run_record] = [r.run for r in records if r.WhichOneof("record_type") == "run"][:1]
    config = {item.key: json.loads(item.value_json) for item in run_record.config.update}
    assert config["student"]["finetune"] == "full" and run_record.run_id == json.loads((store.root / "tracking.json").read_text())["wandb"]["id"]


def test_mlflow_local_store_holds_metrics_loss_and_config(tracked_run):
    require("mlflow")
    from mlflow import MlflowClient

    store = tracked_run
    ledger = json.loads((store.root / "tracking.json").read_text())["mlflow"]
    assert ledger["uri"] == f"sqlite:///{store.root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=ledger["uri"])
    found = client.get_run(ledger["run_id"])
    assert found.info.status == "FINISHED" and found.data.params["student.finetune"] == "full"
    history = client.get_metric_history(ledger["run_id"], "iteration/seed_accuracy")
    assert sorted((m.step, round(m.value, 4)) for m in history) == [(i, round(store.metrics(i)["seed_accuracy"], 4)) for i in (0, 1)]
    losses = client.get_metric_history(ledger["run_id"], "train_loss/iter_000")
    assert sorted((m.step, m.value) for m in losses) == [(row["step"], row["loss"]) for row in store.train_log(0)]
    assert (store.root / "mlartifacts").is_dir()  # artifacts stay in the run directory, not the working directory


def test_a_tracker_added_on_resume_catches_up_once(tmp_path, data_files):
    require("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from scripted import ScriptedStudent

    seeds, test = data_files
    overrides = [f"data.seed_path={seeds}", f"data.test_path={test}", f"output_dir={tmp_path / 'runs'}",
                 "teacher.type=scripted:ScriptedTeacher", "loop.iterations=2", "name=late"]
    student = ScriptedStudent({"Where is my invoice for the March order?"})
    store = run(load_config(None, overrides), student=student)
    assert not (store.root / "tensorboard").exists()
    for _ in range(2):  # report_to may change on resume; the finished stages are logged the first time only
        run(load_config(None, overrides + ["report_to=tensorboard"]), student=student)
    events = EventAccumulator(str(store.root / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("iteration/seed_accuracy")] == [0, 1]
    assert [e.step for e in events.Scalars("iteration/parents")] == [0, 1]


def test_report_to_is_checked_before_anything_is_written(tmp_path, data_files, monkeypatch):
    seeds, test = data_files
    overrides = [f"data.seed_path={seeds}", f"data.test_path={test}", f"output_dir={tmp_path / 'runs'}",
                 "teacher.type=scripted:ScriptedTeacher", "loop.iterations=1", "report_to=wandb"]
    assert load_config(None, overrides).report_to == ["wandb"]  # a single name, as transformers takes it
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else find_spec(name, *a))
    from scripted import ScriptedStudent

    with pytest.raises(ConfigError, match=r"report_to: wandb needs the wandb package.*pip install 'llm2llm\[wandb\]'"):
        run(load_config(None, overrides), student=ScriptedStudent(set()))
    assert not (tmp_path / "runs").exists()
    with pytest.raises(ConfigError, match=r"report_to"):
        load_config(None, ["report_to=[comet]"])


def test_pruning_keeps_the_training_log(tmp_path):
    store = RunStore(tmp_path)
    student = store.iter_dir(0) / "student"
    student.mkdir()
    (student / "train_log.jsonl").write_text('{"step": 1, "epoch": 0, "loss": 2.5}\n')
    store.prune_student(0)
    assert not student.exists() and store.train_log(0) == [{"step": 1, "epoch": 0, "loss": 2.5}]
