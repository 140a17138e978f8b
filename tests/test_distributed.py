"""The student beyond one process (distributed.py), on CPUs with torch.distributed's gloo backend: two launched
processes train the tiny random model as one process would on the same batches (DDP), share the prediction batches
and gather the answers in order, and run a whole loop whose files are those of one process, written by the main
process alone; a helper killed mid fine-tune leaves a run that the same command resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import LABELS, SEED_ROWS, TEST_ROWS
from killable import killable_config, reference_run
from llm2llm import report
from llm2llm.distributed import free_port, launch_command
from llm2llm.errors import ConfigError
from llm2llm.runstore import RunStore

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"


def _env(**extra: str) -> dict[str, str]:
    """One thread a process (two processes share this machine's cores), this checkout's package and test parts."""
    paths = [str(REPO / "src"), str(TESTS), *([extra.pop("AUDIT")] if "AUDIT" in extra else [])]
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(paths), **extra}


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()), *args]


def _close(found, expected, tolerance: float = 2e-4):
    """Equal, floats to `tolerance` (two processes add the same numbers in another order)."""
    if isinstance(expected, float):
        return found == pytest.approx(expected, abs=tolerance)
    if isinstance(expected, dict):
        return found.keys() == expected.keys() and all(_close(found[k], v, tolerance) for k, v in expected.items())
    if isinstance(expected, list):
        return len(found) == len(expected) and all(_close(f, e, tolerance) for f, e in zip(found, expected))
    return found == expected


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return {key: value for path in sorted(folder.glob("*.safetensors")) for key, value in load_file(path).items()}


def _max_difference(found: dict, expected: dict) -> float:
    assert found.keys() == expected.keys()
    return max((found[key].float() - expected[key].float()).abs().max().item() for key in expected)


# ── the student: DDP training, sharded prediction ─────────────────────────────────────────────────────────────────
@pytest.mark.slow
def test_two_processes_train_and_predict_as_one_process_does(tmp_path, tiny_model_dir):
    from distributed_job import main as one_process

    system = {"role": "system", "content": "Label the customer message: billing, shipping or technical."}
    pairs = [([system, {"role": "user", "content": row["text"]}], row["label"]) for row in SEED_ROWS + TEST_ROWS]
    common = {"model": tiny_model_dir, "epochs": 2, "batch_size": 4, "eval_batch_size": 2, "dtype": "float32"}
    # 13 examples in batches of 4: the last batch of each epoch has one example, so one process gets none of it.
    students = {"full": {**common, "finetune": "full", "learning_rate": 1e-3}, "lora": {**common, "finetune": "lora"}}
    specs = {}
    for processes in (1, 2):
        specs[processes] = tmp_path / f"spec{processes}.json"
        specs[processes].write_text(json.dumps({"out": str(tmp_path / str(processes)), "seed": 0, "pairs": pairs,
                                                "max_new_tokens": 4, "candidates": [LABELS] * len(pairs),
                                                "students": students}))
    one_process(str(specs[1]))
    launched = subprocess.run(_torchrun(str(TESTS / "distributed_job.py"), str(specs[2])), env=_env(),
                              capture_output=True, text=True, timeout=600)
    assert launched.returncode == 0, launched.stderr[-3000:]

    base = _weights(Path(tiny_model_dir))
    for name in students:
        alone, shared = (json.loads((tmp_path / str(n) / f"{name}.json").read_text()) for n in (1, 2))
        assert (alone["processes"], shared["processes"]) == (1, 2)
        # Training: the same steps and losses, and the same weights to float rounding, far from the base weights.
        assert shared["stats"]["train_steps"] == alone["stats"]["train_steps"] == 8
        assert _close(shared["stats"]["final_loss"], alone["stats"]["final_loss"], 1e-3)
        alone_weights, shared_weights = _weights(tmp_path / "1" / name), _weights(tmp_path / "2" / name)
        assert _max_difference(shared_weights, alone_weights) < 1e-5
        if name == "full":
            assert _max_difference(alone_weights, base) > 1e-3
        else:  # LoRA's B starts at zero: trained adapters are not
            assert max(value.abs().max().item() for key, value in alone_weights.items() if "lora_B" in key) > 1e-4
        # Prediction: each process did every other batch; the answers came back in the prompts' order.
        assert shared["predictions"] == alone["predictions"]
        # Each process scored its own batches only (not every prompt): together, every prompt once.
        assert alone["scored_by_process"] == [len(pairs)]
        assert sum(shared["scored_by_process"]) == len(pairs) and max(shared["scored_by_process"]) < len(pairs)
        assert _close(shared["scores"], alone["scores"], 1e-4)
        assert len({tuple(round(x, 3) for x in row) for row in alone["scores"]}) > 1  # not one row repeated


# ── the whole loop ───────────────────────────────────────────────────────────────────────────────────────────────
@pytest.fixture(scope="module")
def loop_setup(tmp_path_factory, tiny_model_dir):
    """A tiny out-of-fold run (3 folds: two side by side, one across both processes), and one process's run of it."""
    root = tmp_path_factory.mktemp("distributed")
    config = killable_config(root, tiny_model_dir, student="  eval_batch_size: 2\n  dtype: float32\n",
                             extra="select:\n  by: out_of_fold\n  folds: 3\n")
    reference, calls = reference_run(config, [f"output_dir={root / 'runs'}", "name=reference"])
    report.write(reference)  # as `llm2llm run` does
    return config, reference.root, calls


def _files(run_dir: Path) -> set[str]:
    return {str(path.relative_to(run_dir)) for path in run_dir.rglob("*") if path.is_file() and path.name != "error.log"}


def _assert_same_run(run_dir: Path, reference: Path) -> None:
    assert _files(run_dir) == _files(reference)
    for name in sorted(_files(reference)):
        if name.endswith(".jsonl"):
            rows = [json.loads(line) for line in (run_dir / name).read_text().splitlines()]
            assert _close(rows, [json.loads(line) for line in (reference / name).read_text().splitlines()]), name
    assert _max_difference(_weights(run_dir / "iter_001" / "student"), _weights(reference / "iter_001" / "student")) < 1e-5
    assert RunStore(run_dir).state()["finished"]


def _llm2llm_run(config: Path, run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "llm2llm", "run", str(config), f"output_dir={run_dir.parent}", f"name={run_dir.name}",
            "--quiet", *extra]


@pytest.mark.slow
def test_a_run_with_two_processes_writes_what_one_writes_and_only_the_main_process_writes(tmp_path, loop_setup):
    config, reference, reference_calls = loop_setup
    run_dir, calls, writes = tmp_path / "runs" / "two", tmp_path / "calls", tmp_path / "writes"
    exits = tmp_path / "exits"
    env = _env(AUDIT=str(TESTS / "audit"), LLM2LLM_TEST_CALL_LOG=str(calls), LLM2LLM_TEST_WATCHED=str(tmp_path),
               LLM2LLM_TEST_WRITES=str(writes), LLM2LLM_TEST_EXITS=str(exits),
               HF_HOME=str(tmp_path / "hf"))  # no accelerate config of this user's
    result = subprocess.run(_llm2llm_run(config, run_dir, "--processes", "2"), env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_same_run(run_dir, reference)

    # Only the main process (RANK 0) wrote: the run directory and the teacher's call log; the helper nothing.
    writers = Counter(line.split(" ", 1)[0] for line in writes.read_text().splitlines())
    assert writers["0"] > 20 and set(writers) == {"0"}, writers
    # The teacher was asked what one process asked, once each (a helper asking too would double them).
    assert Counter(calls.read_text().splitlines()) == reference_calls
    # The out-of-fold students trained side by side, and the report says what that saved.
    metrics = RunStore(run_dir).metrics(0)
    assert metrics["folds_side_by_side"]["folds"] == 2 and {metrics["folds"][f"fold_{j}"]["process"] for j in (0, 1)} == {0, 1}
    assert "out-of-fold students trained side by side, one per process" in (run_dir / "report.md").read_text()
    # Both processes closed torch.distributed before exiting: one that exits with its gloo group open can abort on the
    # way out, and the launcher then fails the finished run (it did, now and then, before Team.leave).
    assert sorted(exits.read_text().splitlines()) == ["0 closed", "1 closed"]


@pytest.mark.slow
def test_a_helper_killed_mid_finetune_leaves_a_run_the_same_command_resumes(tmp_path, loop_setup):
    config, reference, reference_calls = loop_setup
    run_dir, calls, paused = tmp_path / "runs" / "killed", tmp_path / "calls", tmp_path / "paused"
    command = _torchrun("-m", "llm2llm", *_llm2llm_run(config, run_dir)[3:])
    pause = {"LLM2LLM_TEST_PAUSE": "finetune-step:1", "LLM2LLM_TEST_PAUSE_RANK": "1", "LLM2LLM_TEST_PAUSED": str(paused)}
    process = subprocess.Popen(command, env=_env(LLM2LLM_TEST_CALL_LOG=str(calls), **pause), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not paused.is_file():
            assert process.poll() is None, f"the run ended (rc {process.returncode}) before the pause: {process.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "no pause within 300 s"
            time.sleep(0.2)
        os.kill(int(paused.read_text()), signal.SIGKILL)  # the helper, in iteration 1's fine-tune
        process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode != 0  # the launcher stopped the main process too
    state = RunStore(run_dir).state()
    assert not state["finished"] and "finetune" not in state["iterations"].get("1", {})

    resumed = subprocess.run(command, env=_env(LLM2LLM_TEST_CALL_LOG=str(calls)), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_same_run(run_dir, reference)
    assert Counter(calls.read_text().splitlines()) == reference_calls  # nothing asked twice across the kill


# ── the launcher's command line ──────────────────────────────────────────────────────────────────────────────────
def test_processes_runs_the_command_under_accelerate_launch(tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # No accelerate config of this machine's user is read.
    monkeypatch.setattr("accelerate.commands.config.config_args.default_config_file", str(tmp_path / "none.yaml"))
    command = launch_command(2, None, ["run", "c.yaml"])
    assert command[1:3] == ["-m", "accelerate.commands.launch"] and command[-4:] == ["-m", "llm2llm", "run", "c.yaml"]
    assert command[command.index("--num_processes") + 1] == "2" and "--multi_gpu" in command  # DDP (gloo on CPUs)
    assert 0 < int(command[command.index("--main_process_port") + 1]) < 65536  # a free port, not a fixed one

    # The README's FSDP config, as accelerate reads it.
    readme = (REPO / "README.md").read_text()
    fsdp = tmp_path / "fsdp.yaml"
    fsdp.write_text(next(block for block in readme.split("```yaml\n")[1:] if "distributed_type: FSDP" in block).split("```")[0])
    command = launch_command(2, fsdp, ["run", "c.yaml"])
    assert command[command.index("--config_file") + 1] == str(fsdp) and "--multi_gpu" not in command
    from accelerate.commands.config.config_args import load_config_from_file

    fsdp_config = load_config_from_file(str(fsdp))
    assert str(fsdp_config.distributed_type).endswith("FSDP") and fsdp_config.fsdp_config["fsdp_use_orig_params"] is True
    with pytest.raises(ConfigError, match="--accelerate-config: no file"):
        launch_command(2, tmp_path / "missing.yaml", ["run", "c.yaml"])
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="drop --processes"):
        launch_command(2, None, ["run", "c.yaml"])


def test_only_run_starts_as_several_processes(monkeypatch, capsys):
    from llm2llm import cli

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(sys, "argv", ["llm2llm", "compare", "configs/trec.yaml"])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 2 and "only `llm2llm run` runs as several processes" in " ".join(capsys.readouterr().err.split())
