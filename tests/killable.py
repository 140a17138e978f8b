"""Parts for tests that SIGKILL a real `llm2llm run` process (test_kill.py), loaded by it as `module:Class`.

`LoggingTeacher` appends every reply it delivers to the file named by $LLM2LLM_TEST_CALL_LOG, so the requests paid for
can be counted across processes. Both parts stop the process dead at the point named by $LLM2LLM_TEST_PAUSE, after
writing its pid to $LLM2LLM_TEST_PAUSED, and wait there to be killed:
- `finetune-start:<i>`: iteration i's fine-tune is about to begin, nothing of it written (a stage boundary);
- `finetune-step:<i>`: after its first optimizer step (mid-stage);
- `generate:<n>`: the n-th teacher request hangs unanswered while the other worker goes on (mid-stage).
Under several launched processes, only the one whose RANK is $LLM2LLM_TEST_PAUSE_RANK pauses (when that is set).
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from llm2llm.students.hf import HFStudent
from llm2llm.teachers import TeacherReply, TeacherRequest

from scripted import ScriptedTeacher


def pause_at(point: str) -> None:
    if os.environ.get("LLM2LLM_TEST_PAUSE") != point:
        return
    if os.environ.get("LLM2LLM_TEST_PAUSE_RANK", os.environ.get("RANK")) != os.environ.get("RANK"):
        return
    Path(os.environ["LLM2LLM_TEST_PAUSED"]).write_text(str(os.getpid()))
    while True:  # until SIGKILL
        time.sleep(60)


class LoggingTeacher(ScriptedTeacher):
    _lock = threading.Lock()
    _started = 0

    def complete(self, request: TeacherRequest, seed: int) -> TeacherReply:
        with LoggingTeacher._lock:
            LoggingTeacher._started += 1
            number = LoggingTeacher._started
        pause_at(f"generate:{number}")  # before the reply exists: nothing is paid for this one
        reply = super().complete(request, seed)
        with LoggingTeacher._lock, open(os.environ["LLM2LLM_TEST_CALL_LOG"], "a", encoding="utf-8") as log:
            log.write(json.dumps(request.messages[-1]["content"]) + "\n")
        return reply


class PausingStudent(HFStudent):
    def train(self, pairs, out_dir, advance=None, init_from=None):
        iteration = next(int(part.removeprefix("iter_")) for part in reversed(out_dir.parts) if part.startswith("iter_"))
        pause_at(f"finetune-start:{iteration}")

        def step(n: int) -> None:
            if advance:
                advance(n)
            pause_at(f"finetune-step:{iteration}")

        return super().train(pairs, out_dir, step, init_from)


def killable_config(root: Path, model_dir: str, student: str = "", extra: str = "") -> Path:
    """A tiny run's config (conftest's rows, the tiny model) whose student and teacher are this module's; `student`
    adds lines to the student section, `extra` sections of its own."""
    from conftest import SEED_ROWS, TEST_ROWS, write_jsonl

    seeds, test = write_jsonl(root / "seeds.jsonl", SEED_ROWS), write_jsonl(root / "test.jsonl", TEST_ROWS)
    config = root / "config.yaml"
    config.write_text(
        f"data:\n  seed_path: {seeds}\n  test_path: {test}\n"
        f"student:\n  type: killable:PausingStudent\n  model: {model_dir}\n  finetune: full\n  epochs: 1\n"
        f"  batch_size: 4\n  learning_rate: 1.0e-3\n{student}"
        f"teacher:\n  type: killable:LoggingTeacher\n  samples_per_wrong: 2\n  max_concurrency: 2\n{extra}"
        "loop:\n  iterations: 2\n")
    return config


def reference_run(config: Path, overrides: list[str]):
    """One uninterrupted run of `config` in this process, and the teacher replies it paid for (line → count)."""
    from collections import Counter

    from llm2llm.config import load_config
    from llm2llm.loop import run

    log = config.parent / "reference.calls"
    os.environ["LLM2LLM_TEST_CALL_LOG"] = str(log)
    try:
        store = run(load_config(config, overrides))
    finally:
        del os.environ["LLM2LLM_TEST_CALL_LOG"]
    return store, Counter(log.read_text().splitlines())
