"""A real `llm2llm run` process killed with SIGKILL at a stage boundary and in the middle of stages, then resumed with
the same command: the run ends with the same files as an uninterrupted one, and no teacher reply is paid for twice.
And two processes started on one run directory: exactly one proceeds."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llm2llm.cli import app
from llm2llm.runstore import RunStore

from killable import killable_config, reference_run

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
COMPARED = ["iter_000/train.jsonl", "iter_000/seed_predictions.jsonl", "iter_000/wrong.jsonl", "iter_000/generated.jsonl",
            "iter_000/rejected.jsonl", "iter_001/train.jsonl", "iter_001/seed_predictions.jsonl", "iter_001/test_predictions.jsonl"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model_dir):
    """The config every run here uses, and one uninterrupted run of it to compare with."""
    root = tmp_path_factory.mktemp("kill")
    config = killable_config(root, tiny_model_dir, extra="select:\n  by: train_errors\n")  # the paper's loop: its stages
    reference, calls = reference_run(config, [f"output_dir={root}", "name=reference"])
    return config, reference.root, calls


def _start(config: Path, run_dir: Path, pause: str, paused: Path, calls: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO / "tests")]),
           "LLM2LLM_TEST_PAUSE": pause, "LLM2LLM_TEST_PAUSED": str(paused), "LLM2LLM_TEST_CALL_LOG": str(calls)}
    return subprocess.Popen([sys.executable, "-m", "llm2llm", "run", str(config), f"output_dir={run_dir.parent}",
                             f"name={run_dir.name}", "--quiet"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(condition, process: subprocess.Popen | None, what: str, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the run ended (rc {process.returncode}) before {what}: {process.stderr.read()[-2000:]}")
        assert time.monotonic() < deadline, f"no {what} within {timeout_s} s"
        time.sleep(0.2)


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.is_file() else []


def _cached(run_dir: Path) -> int:
    path = run_dir / "teacher_cache.sqlite"
    if not path.is_file():
        return 0
    with sqlite3.connect(path) as db:
        return db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]


def _resume(config: Path, run_dir: Path, calls: Path, monkeypatch) -> None:
    """The same command again (in this process, to save an interpreter start)."""
    monkeypatch.setenv("LLM2LLM_TEST_CALL_LOG", str(calls))
    monkeypatch.delenv("LLM2LLM_TEST_PAUSE", raising=False)
    result = CliRunner().invoke(app, ["run", str(config), f"output_dir={run_dir.parent}", f"name={run_dir.name}", "--quiet"])
    assert result.exit_code == 0, result.output


def _assert_same_run(run_dir: Path, reference: Path, calls: Path, reference_calls: Counter) -> None:
    for name in COMPARED:
        assert (run_dir / name).read_text() == (reference / name).read_text(), name
    assert RunStore(run_dir).state()["finished"] and _finished(run_dir) == _finished(reference)
    # Every reply the teacher delivered, over the killed and the resumed process, is one the uninterrupted run needed.
    assert Counter(_lines(calls)) == reference_calls


def _finished(run_dir: Path) -> dict[str, set[str]]:
    return {iteration: set(stages) for iteration, stages in RunStore(run_dir).state()["iterations"].items()}


@pytest.mark.parametrize("pause, unfinished", [
    ("finetune-step:0", None),  # mid fine-tune: nothing finished yet
    ("generate:3", {"generate", "append"}),  # mid generate, a request in flight at concurrency 2
])  # (a kill at a stage boundary: test_two_processes_... below)
def test_sigkill_mid_stage_then_the_same_command_ends_like_an_uninterrupted_run(tmp_path, setup, monkeypatch, pause, unfinished):
    config, reference, reference_calls = setup
    run_dir, paused, calls = tmp_path / "runs" / "killed", tmp_path / "paused", tmp_path / "calls"
    process = _start(config, run_dir, pause, paused, calls)
    try:
        _wait_for(paused.is_file, process, f"the pause at {pause}")
        if pause.startswith("generate"):
            # The other worker answers the rest; kill once every delivered reply is in the cache (a reply delivered
            # but not yet stored when the process dies would be asked again: the one window no resume can close).
            others = RunStore(reference).metrics(0)["requests"] - 1
            _wait_for(lambda: len(_lines(calls)) == _cached(run_dir) == others, process, "the other requests' replies", timeout_s=60)
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
    assert not RunStore(run_dir).state()["finished"]
    assert _finished(run_dir) == ({} if unfinished is None else {"0": _finished(reference)["0"] - unfinished})

    _resume(config, run_dir, calls, monkeypatch)
    _assert_same_run(run_dir, reference, calls, reference_calls)


def test_two_processes_on_one_run_directory_exactly_one_proceeds(tmp_path, setup, monkeypatch):
    """...and the one that proceeds, killed at a stage boundary (iteration 1's fine-tune about to start), resumes."""
    config, reference, reference_calls = setup
    run_dir, paused, calls = tmp_path / "runs" / "twice", tmp_path / "paused", tmp_path / "calls"
    first, second = (_start(config, run_dir, "finetune-start:1", paused, calls) for _ in range(2))
    try:
        _wait_for(lambda: paused.is_file() and (first.poll() is not None or second.poll() is not None), None,
                  "one process holding the run and the other gone")
        assert first.poll() is None or second.poll() is None, "both processes ended"
        holder, other = (first, second) if second.poll() is not None else (second, first)
        assert int(paused.read_text()) == holder.pid
        _, err = other.communicate(timeout=30)
        assert other.returncode == 2
        assert f"is in use by another llm2llm run (pid {holder.pid} on " in " ".join(err.split())
    finally:
        for process in (first, second):
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.communicate(timeout=30)
    assert _finished(run_dir) == {"0": _finished(reference)["0"]}  # iteration 0 whole, nothing of iteration 1
    assert (run_dir / "run.lock").is_file()  # left behind by the killed holder: it must not block the next run
    _resume(config, run_dir, calls, monkeypatch)
    _assert_same_run(run_dir, reference, calls, reference_calls)
    assert json.loads((run_dir / "run.lock.json").read_text())["pid"] == os.getpid()
