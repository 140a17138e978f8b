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


def test_one_writer_at_a_time_and_the_holder_is_named(tmp_path):
    import os

    store = RunStore(tmp_path / "run")
    with store.lock():
        with pytest.raises(RunStateError, match=rf"run is in use by another llm2llm run \(pid {os.getpid()} on .*\); a run "
                                                r"directory has one writer at a time"):
            with RunStore(tmp_path / "run").lock():
                pass
    with RunStore(tmp_path / "run").lock():  # released: the next writer gets it
        pass


def test_a_contender_waits_for_a_holder_that_has_not_named_itself_yet(tmp_path):
    """The holder writes run.lock.json just after taking the lock (a race CI lost once); a name left by a process that
    has gone is not taken for the holder's."""
    import json
    import os
    import socket
    import subprocess
    import sys
    import threading

    from filelock import FileLock

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    root = tmp_path / "run"
    root.mkdir()
    name = {"host": socket.gethostname(), "since": "2026-12-06 05:00:00", "command": "llm2llm run demo"}
    (root / "run.lock.json").write_text(json.dumps({**name, "pid": int(gone.stdout)}))
    with FileLock(root / "run.lock", timeout=0):  # held, but not yet named
        late = threading.Timer(0.5, lambda: (root / "run.lock.json").write_text(json.dumps({**name, "pid": os.getpid()})))
        late.start()
        with pytest.raises(RunStateError, match=rf"in use by another llm2llm run \(pid {os.getpid()} on "):
            with RunStore(root).lock():
                pass
        late.join()


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("state.json", '{"iterations": {"0": {"fine', r"state\.json: cannot read it \(Unterminated string.*\); it lists the finished stages: restore it, or delete it"),
        ("state.json", "[1, 2]", r"state\.json: not a state file of llm2llm"),
        ("state.json", b"\xff\xfe", r"state\.json: cannot read it"),
        ("config.yaml", "name: [unclosed\n", r"config\.yaml:2: cannot read the run's frozen config \(not valid YAML: "),
        ("config.yaml", "- a list\n", r"config\.yaml: the run's frozen config is not a mapping"),
        ("config.yaml", "student:\n  epochs: many\n", r"config\.yaml: not a config this version can read \(student\.epochs"),
    ],
    ids=["cut-json", "not-a-mapping", "not-utf8", "bad-yaml", "yaml-list", "invalid-value"],
)
def test_a_corrupt_run_file_is_named_with_what_to_do(tmp_path, name, content, message):
    store = RunStore(tmp_path / "run")
    store.open(load_config(None, []))
    path = store.root / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(RunStateError, match=message):
        store.state() if name == "state.json" else store.config()


def test_a_corrupt_metrics_file_is_read_from_the_state_instead(tmp_path):
    store = RunStore(tmp_path / "run")
    store.open(load_config(None, []))
    store.mark_done(0, "finetune", {"train_examples": 3, "seconds": 1.5})
    (store.root / "iter_000" / "metrics.json").write_text("{")
    assert store.metrics(0) == {"iteration": 0, "stage_seconds": {"finetune": 1.5}, "train_examples": 3}


def test_a_run_frozen_before_the_form_key_is_read_as_it_ran(tmp_path):
    """teacher_keep_form's default follows select.by now; a run frozen without the key asked for new wording."""
    store = RunStore(tmp_path / "run")
    old = load_config(None, ["task.teacher_keep_form=false", "teacher.samples_per_wrong=1"])
    store.open(old)
    frozen = yaml.safe_load((store.root / "config.yaml").read_text())
    assert frozen["select"]["by"] == "out_of_fold"
    del frozen["task"]["teacher_keep_form"]  # as written by a version without the key
    (store.root / "config.yaml").write_text(yaml.safe_dump(frozen))
    assert store.config().task.teacher_keep_form is False
    store.open(old)  # resumes as it ran
    with pytest.raises(RunStateError, match="changed: task.teacher_keep_form"):
        store.open(load_config(None, ["teacher.samples_per_wrong=1"]))  # today's default would keep the form
