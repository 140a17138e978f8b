"""Every way a user's input can be wrong, as a row: input → exit code → one line of message, no traceback.
(`demo` is `run` with the packaged config: the rows' overrides replace all of it that matters.)

The `run` rows that fail in preflight also show that nothing was written: no run directory, so no frozen config
that would refuse the corrected command.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable

import pytest
from typer.testing import CliRunner

from llm2llm.cli import app
from llm2llm.config import load_config
from llm2llm.runstore import RunStore

from conftest import SEED_ROWS, write_jsonl
from stub_server import OpenAIStub, refused_url

runner = CliRunner()


class Case:
    """What a row gets to build its command: a temporary directory, the tiny run's arguments, a stub endpoint."""

    def __init__(self, tmp_path: Path, tiny: list[str], stub: OpenAIStub, monkeypatch) -> None:
        self.tmp_path, self.tiny, self.stub, self.monkeypatch = tmp_path, tiny, stub, monkeypatch
        self.run_dir = tmp_path / "runs" / "t"
        self.test = next(arg for arg in tiny if arg.startswith("data.test_path="))
        self.cleanups: list[Callable[[], None]] = []

    def seeds(self, content: bytes | str, name: str = "seeds.jsonl") -> str:
        path = self.tmp_path / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return f"data.seed_path={path}"

    def config_file(self, text: str) -> str:
        path = self.tmp_path / "c.yaml"
        path.write_text(text)
        return str(path)

    def started_run(self, state: str) -> Path:
        """A run directory with a frozen config and the given state.json."""
        from importlib import resources

        demo = Path(str(resources.files("llm2llm") / "demo_data" / "demo.yaml"))  # what the `demo` rows run
        store = RunStore(self.run_dir)
        store.open(load_config(demo, [arg for arg in self.tiny if arg != "--quiet"]))
        (self.run_dir / "state.json").write_text(state)
        return self.run_dir

    def unreadable(self) -> str:
        path = write_jsonl(self.tmp_path / "seeds.jsonl", SEED_ROWS)
        path.chmod(0)
        if os.access(path, os.R_OK):  # root reads anything: make the read fail as it does for everyone else
            def denied(self):
                raise PermissionError(13, "Permission denied", str(self))

            self.monkeypatch.setattr(Path, "read_bytes", denied)
        return f"data.seed_path={path}"

    def locked(self) -> bool:
        """Hold the run directory as another process would, until the row's command has run."""
        lock = RunStore(self.run_dir).lock()
        lock.__enter__()
        self.cleanups.append(lambda: lock.__exit__(None, None, None))
        return True


LONG_ROW = '{"text": "' + "my parcel " * 400 + '", "label": "shipping"}\n'
SEEDS_JSONL = "".join(f'{{"text": "{row["text"]}", "label": "{row["label"]}"}}\n' for row in SEED_ROWS)
TWO_ITERATIONS = "loop.iterations=2"
ROWS: list[tuple[str, Callable[[Case], list[str]], int, str]] = [
    # ── preflight: the teacher, the student, the data, before anything is written ──
    ("teacher-url-refused", lambda c: ["demo", *c.tiny, TWO_ITERATIONS, "teacher.type=openai", f"teacher.base_url={refused_url()}"],
     2, "error: teacher.base_url: cannot reach http://127.0.0.1:"),
    ("teacher-key-unset", lambda c: ["demo", *c.tiny, TWO_ITERATIONS, "teacher.type=openai", "teacher.base_url=https://api.example.invalid/v1",
                                     "teacher.api_key_env=LLM2LLM_UNSET_KEY"],
     2, "teacher.api_key_env: the environment variable LLM2LLM_UNSET_KEY is not set"),
    ("teacher-model-not-served", lambda c: ["demo", *c.tiny, TWO_ITERATIONS, "teacher.type=openai", f"teacher.base_url={c.stub.base_url}",
                                            "teacher.model=gpt-typo"],
     2, "teacher.model: http://127.0.0.1:"),
    ("teacher-gguf-missing", lambda c: ["demo", *c.tiny, TWO_ITERATIONS, "teacher.type=local", f"teacher.model={c.tmp_path / 'qwen.gguf'}"],
     2, "qwen.gguf' is neither a bundled alias"),
    ("verifier-url-refused", lambda c: ["demo", *c.tiny, TWO_ITERATIONS, "quality.verifier.type=openai",
                                        f"quality.verifier.base_url={refused_url()}"],
     2, "error: quality.verifier.base_url: cannot reach"),
    ("student-missing", lambda c: ["demo", *c.tiny, f"student.model={c.tmp_path / 'my-student'}"],
     2, "student.model: " + "{tmp}/my-student is not a folder"),
    ("seed-too-long", lambda c: ["demo", *c.tiny, c.seeds(LONG_ROW + SEEDS_JSONL), "student.max_length=128"],
     2, "1 seed row(s) need more than student.max_length=128 tokens (prompt and answer): {tmp}/seeds.jsonl:1 has"),
    # ── data files ──
    ("seed-unreadable", lambda c: ["demo", *c.tiny, c.unreadable()], 2, "seeds.jsonl: cannot read it (Permission denied)"),
    ("seed-directory", lambda c: ["demo", *c.tiny, f"data.seed_path={c.tmp_path}"], 2, "is a directory, not a data file; point data.seed_path"),
    ("seed-latin1", lambda c: ["demo", *c.tiny, c.seeds(b'{"text": "a", "label": "billing"}\n{"text": "caf\xe9", "label": "billing"}\n')],
     2, "seeds.jsonl:2: not UTF-8 text (byte 0xe9"),
    ("seed-nan-label", lambda c: ["demo", *c.tiny, c.seeds('{"text": "a", "label": NaN}\n')], 2, "seeds.jsonl:1: field 'label' is nan"),
    ("csv-extra-values", lambda c: ["estimate", c.config_file("name: t\n"), c.seeds("text,label\nhello, world,billing\n", "s.csv"), c.test],
     2, "s.csv:2: 1 more value(s) than the header has columns"),
    ("jsonl-bom", lambda c: ["estimate", c.config_file("name: t\n"), c.seeds("\ufeff" + SEEDS_JSONL), c.test], 0, "total teacher tokens"),
    ("csv-bom", lambda c: ["estimate", c.config_file("name: t\n"), c.seeds("\ufefftext,label\n" + "".join(
        f'"{r["text"]}",{r["label"]}\n' for r in SEED_ROWS), "s.csv"), c.test], 0, "total teacher tokens"),
    # ── config ──
    ("config-empty", lambda c: ["run", c.config_file("")], 2, "the config file is empty. Run `llm2llm demo`"),
    ("config-duplicate-key", lambda c: ["run", c.config_file("student:\n  epochs: 1\n  epochs: 2\n")],
     2, "c.yaml:3: not valid YAML (duplicate key 'epochs' (first given on line 2)"),
    ("task-type-function", lambda c: ["demo", *c.tiny, "task.type=os:system"],
     2, "task.type: 'os:system' is a builtin_function_or_method, not a class"),
    # ── the run directory ──
    ("state-corrupt-run", lambda c: [c.started_run("{") and "demo", *c.tiny], 2, "state.json: cannot read it"),
    ("state-corrupt-status", lambda c: ["status", str(c.started_run("{"))], 2, "state.json: cannot read it"),
    ("state-corrupt-report", lambda c: ["report", str(c.started_run('{"iterations": {"0": {"fine'))], 2, "state.json: cannot read it"),
    ("run-in-use", lambda c: [c.locked() and "demo", *c.tiny], 2, "is in use by another llm2llm run (pid"),
]


@pytest.fixture
def tiny(tmp_path, data_files, tiny_model_dir):
    seeds, test = data_files
    return [f"output_dir={tmp_path / 'runs'}", "name=t", f"data.seed_path={seeds}", f"data.test_path={test}",
            f"student.model={tiny_model_dir}", "student.epochs=1", "teacher.type=scripted:ScriptedTeacher", "loop.iterations=1",
            "--quiet"]


@pytest.mark.parametrize("build, code, fragment", [row[1:] for row in ROWS], ids=[row[0] for row in ROWS])
def test_each_mistake_exits_with_its_code_and_one_line(tmp_path, tiny, monkeypatch, build, code, fragment):
    with OpenAIStub(models=("gpt-4o-mini",)) as stub:
        case = Case(tmp_path, tiny, stub, monkeypatch)
        args = build(case)
        ran_before = case.run_dir.is_dir()
        result = runner.invoke(app, [a for a in args if a != "--quiet" or args[0] in ("run", "demo")])
        for cleanup in case.cleanups:
            cleanup()
    output = " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert result.exit_code == code, output
    assert fragment.replace("{tmp}", str(tmp_path)) in output, output
    if code == 2 and args[0] in ("run", "demo") and not ran_before:
        assert not (case.run_dir / "config.yaml").exists()  # failed before anything was written


def _fail_after_preflight(monkeypatch, error: Exception) -> None:
    """Make the run stop where training would begin (the run directory exists by then)."""
    def build_student(*args, **kwargs):
        raise error

    monkeypatch.setattr("llm2llm.loop.build_student", build_student)


def test_test_labels_the_seeds_lack_are_one_warning_line(tmp_path, tiny, monkeypatch):
    from llm2llm.errors import ModelError

    _fail_after_preflight(monkeypatch, ModelError("stopped before training"))  # the warning comes before: no need to train
    test = write_jsonl(tmp_path / "t.jsonl", [{"text": "I want to talk to sales", "label": "sales"}, {"text": "late parcel", "label": "shipping"}])
    result = runner.invoke(app, ["demo", *tiny, f"data.test_path={test}", "task.labels=[billing, sales, shipping, technical]"])
    assert result.exit_code == 2 and "stopped before training" in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(lines) == 1 and "no seed example has: sales (1 of 2 test rows)" in " ".join(result.output.split())


# ── internal errors: the traceback goes to a file of ours, or to the screen, never through a planted symlink ──
def test_an_internal_error_logs_its_traceback_in_the_run_directory(tmp_path, tiny, monkeypatch):
    _fail_after_preflight(monkeypatch, RuntimeError("injected [bug]"))
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    run_dir = tmp_path / "runs" / "t"
    run_dir.mkdir(parents=True)
    (run_dir / "error.log").symlink_to(victim)  # replaced, not written through
    result = runner.invoke(app, ["demo", *tiny])
    assert result.exit_code == 1 and "internal error: RuntimeError: injected [bug]" in result.output
    assert f"The full traceback is in {run_dir / 'error.log'}" in " ".join(result.output.split())
    assert victim.read_text() == "precious" and not (run_dir / "error.log").is_symlink()
    assert "RuntimeError: injected [bug]" in (run_dir / "error.log").read_text()


def test_without_a_run_directory_the_log_is_a_new_private_file_or_the_screen(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("injected [bug]")

    monkeypatch.setenv("LLM2LLM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(RunStore, "config", boom)  # `status` has no run directory of its own to log into
    crashed = runner.invoke(app, ["status", str(tmp_path / "runs" / "t")])
    assert crashed.exit_code == 1 and "internal error: RuntimeError: injected [bug]" in crashed.output
    logs = tmp_path / "cache" / "logs"
    [log] = list(logs.iterdir())
    assert f"The full traceback is in {log};" in " ".join(crashed.output.split())
    assert re.fullmatch(r"error-\d{8}-\d{6}-\w+\.log", log.name) and "injected [bug]" in log.read_text()
    assert (log.stat().st_mode & 0o777) == 0o600 and (logs.stat().st_mode & 0o777) == 0o700

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("llm2llm.errorlog.tempfile.mkstemp", denied)  # no file can be made: show it rather than lose it
    shown = runner.invoke(app, ["status", str(tmp_path / "runs" / "t")])
    assert shown.exit_code == 1 and "No log file could be written" in shown.output
    assert 'raise RuntimeError("injected [bug]")' in shown.output and "Traceback" in shown.output


def test_a_log_directory_planted_as_a_symlink_is_not_used(tmp_path, monkeypatch):
    from llm2llm.errorlog import write_error_log

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "logs").symlink_to(elsewhere)
    monkeypatch.setenv("LLM2LLM_CACHE_DIR", str(tmp_path / "cache"))
    assert write_error_log("trace") is None and not list(elsewhere.iterdir())
