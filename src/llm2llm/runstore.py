"""The run directory: layout, frozen config, stage done-markers (state.json) and per-iteration metrics.

Every write is tmp + rename, so a crash leaves either the old file or the new one. A stage counts as done only
once its outputs are written and its marker is in state.json; anything else is redone from its inputs.
One process writes a run directory at a time: `lock()` holds an OS file lock on run.lock (released by the kernel
when the process ends, however it ends, so a killed run never blocks the next one).
"""

from __future__ import annotations

import difflib
import json
import os
import shutil
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml
from pydantic import ValidationError

from llm2llm.config import PAPER_LOOP, Config, config_to_yaml
from llm2llm.errors import RunStateError

# Keys that change speed or disk use but not results: a resumed run may change them freely.
RESUMABLE_CHANGES = {
    "loop.iterations",
    "loop.patience",
    "budget.max_teacher_tokens",
    "budget.max_cost",
    "student.eval_batch_size",
    "student.num_threads",
    "student.keep_checkpoints",
    "student.folds_side_by_side",
    "teacher.max_concurrency",
    "teacher.retry_wait_s",
    "teacher.retry_max_wait_s",
    "teacher.max_failure_ratio",
    "teacher.timeout_s",
    "teacher.max_retries",
    "eval.test_every_iteration",
    "report_to",
}


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# Keys whose default follows select.by (Config._paper_or_ours): a run frozen before the key existed did what the
# paper's loop does, whatever its select.by, and is read so (not as today's default would resolve).
BEFORE_THE_KEY = PAPER_LOOP


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: asks whether the process exists, sends nothing
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        pass
    return True


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class RunStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        # Called as observer(iteration, stage, info) once a stage's marker is written (experiment trackers, tracking.py).
        self.observers: list[Callable[[int, str, dict[str, Any]], None]] = []

    # ── one writer ──────────────────────────────────────────────────────────────────────────────
    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run directory for this process, or raise RunStateError naming the process that holds it."""
        from filelock import FileLock, Timeout

        self.root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(self.root / "run.lock", timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise RunStateError(
                f"{self.root} is in use by another llm2llm run ({self._holder()}); a run directory has one writer at a "
                "time. Wait for that run to finish or stop it, or choose another name= for a run of your own"
            ) from None
        try:
            # Who holds it, for the message above; a separate file, so that a contender never touches the lock's.
            _atomic_write(self.root / "run.lock.json", json.dumps(
                {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                 "command": " ".join(["llm2llm", *sys.argv[1:]])}))
            yield
        finally:
            lock.release()  # run.lock.json stays: export names the command that last wrote the run

    def _holder(self, wait_s: float = 3.0) -> str:
        # The holder writes its name just after it takes the lock: a contender that lost the race by a moment waits
        # for it, and a name left by an earlier holder that has gone is not taken for the new holder's.
        deadline = time.monotonic() + wait_s
        while True:
            try:
                holder = json.loads((self.root / "run.lock.json").read_text(encoding="utf-8"))
                if holder["host"] != socket.gethostname() or _alive(int(holder["pid"])):
                    return f"pid {holder['pid']} on {holder['host']}, since {holder['since']}: {holder['command']}"
            except (OSError, ValueError, KeyError, TypeError):
                pass
            if time.monotonic() > deadline:
                return "a process that has not said who it is yet"
            time.sleep(0.1)

    # ── config ──────────────────────────────────────────────────────────────────────────────────
    def open(self, config: Config, force: bool = False) -> None:
        """Create the run, or check that a resumed run uses the same config (refused with a diff unless force)."""
        self.root.mkdir(parents=True, exist_ok=True)
        frozen_path = self.root / "config.yaml"
        new_text = config_to_yaml(config)
        if frozen_path.is_file():
            changed = self.changes(config) - RESUMABLE_CHANGES  # reads it first: a corrupt file is named as such
            old_text = frozen_path.read_text(encoding="utf-8")
            if changed and not force:
                diff = "".join(
                    difflib.unified_diff(
                        old_text.splitlines(True), new_text.splitlines(True), "config.yaml (frozen)", "config.yaml (now)"
                    )
                )
                raise RunStateError(
                    f"{self.root} was started with another config (changed: {', '.join(sorted(changed))}).\n{diff}"
                    "Resume with the original config, choose a new name= for a new run, or pass --force to continue "
                    "with the new config (finished stages are kept)."
                )
        _atomic_write(frozen_path, new_text)

    def changes(self, config: Config) -> set[str]:
        """Keys whose value differs between the run's frozen config and `config` (a key newer than the run counts
        only once it leaves its default)."""
        old = flatten(self._frozen())
        new, defaults = flatten(config.model_dump(mode="json")), flatten(Config().model_dump(mode="json"))
        return {key for key in old.keys() | new.keys()
                if old.get(key) != new.get(key) and not (key not in old and new[key] == defaults.get(key))}

    def config(self) -> Config:
        path = self.root / "config.yaml"
        if not path.is_file():
            raise RunStateError(f"{self.root} is not a run directory (no config.yaml)")
        try:
            return Config.model_validate(self._frozen())
        except ValidationError as exc:
            first = exc.errors()[0]
            raise RunStateError(f"{path}: not a config this version can read ({'.'.join(map(str, first['loc']))}: "
                                f"{first['msg']}); restore the file, or start a new run with another name=") from None

    def _frozen(self) -> dict[str, Any]:
        """The frozen config.yaml as a dict; RunStateError when it is not readable YAML of a mapping."""
        path = self.root / "config.yaml"
        try:
            frozen = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark else str(path)
            reason = f"not valid YAML: {exc.problem}" if isinstance(exc, yaml.YAMLError) and mark else type(exc).__name__
            raise RunStateError(f"{where}: cannot read the run's frozen config ({reason}); restore the file, "
                                "or start a new run with another name=") from None
        if not isinstance(frozen, dict):
            raise RunStateError(f"{path}: the run's frozen config is not a mapping of keys; restore the file, or start "
                                "a new run with another name=")
        for section, keys in BEFORE_THE_KEY.items():
            for key, value in keys.items():
                if isinstance(frozen.get(section), dict):
                    frozen[section].setdefault(key, value)
        return frozen

    # ── layout ──────────────────────────────────────────────────────────────────────────────────
    def iter_dir(self, iteration: int) -> Path:
        path = self.root / f"iter_{iteration:03d}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def iterations(self) -> list[int]:
        return sorted(int(p.name[5:]) for p in self.root.glob("iter_[0-9][0-9][0-9]") if p.is_dir())

    @property
    def cache_path(self) -> Path:
        return self.root / "teacher_cache.sqlite"

    def prune_student(self, iteration: int) -> None:
        """Delete an iteration's student weights; its training log (loss per step) stays, as iter_NNN/train_log.jsonl."""
        student = self.root / f"iter_{iteration:03d}" / "student"
        if (student / "train_log.jsonl").is_file():
            os.replace(student / "train_log.jsonl", student.parent / "train_log.jsonl")
        shutil.rmtree(student, ignore_errors=True)

    def train_log(self, iteration: int) -> list[dict[str, Any]]:
        """The iteration's training loss per step ([] when its student kept no log)."""
        for path in (self.root / f"iter_{iteration:03d}" / "student" / "train_log.jsonl",
                     self.root / f"iter_{iteration:03d}" / "train_log.jsonl"):
            if path.is_file():
                return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return []

    # ── state ───────────────────────────────────────────────────────────────────────────────────
    def state(self) -> dict[str, Any]:
        path = self.root / "state.json"
        if not path.is_file():
            return {"iterations": {}, "finished": False}
        state = _read_json(path, "it lists the finished stages: restore it, or delete it to redo every stage (teacher "
                                 "replies come from teacher_cache.sqlite, so none is paid for twice)")
        if not isinstance(state, dict) or not isinstance(state.get("iterations"), dict):
            raise RunStateError(f"{path}: not a state file of llm2llm (no 'iterations'); restore it, or delete it to redo "
                                "every stage")
        return state

    def done(self, iteration: int, stage: str) -> bool:
        return stage in self.state()["iterations"].get(str(iteration), {})

    def info(self, iteration: int, stage: str) -> dict[str, Any]:
        return self.state()["iterations"].get(str(iteration), {}).get(stage, {})

    def mark_done(self, iteration: int, stage: str, info: dict[str, Any]) -> None:
        state = self.state()
        state["iterations"].setdefault(str(iteration), {})[stage] = info
        _atomic_write(self.root / "state.json", json.dumps(state, indent=1))
        self._write_metrics(iteration, state["iterations"][str(iteration)])
        for observer in self.observers:
            observer(iteration, stage, info)

    def best_iteration(self) -> dict[str, Any] | None:
        """The iteration whose student to take: the highest out-of-fold accuracy, the latest among equals (it saw the
        most data and the estimate found it no worse); never the test set. None when no iteration has an estimate."""
        estimates = [(self.info(j, "select")["oof_accuracy"], j) for j in self.iterations() if "oof_accuracy" in self.info(j, "select")]
        if not estimates:
            return None
        accuracy, iteration = max(estimates)
        return {"iteration": iteration, "oof_accuracy": accuracy, "by": "out-of-fold accuracy"}

    def set_finished(self, finished: bool, reason: str = "", best: dict[str, Any] | None = None) -> None:
        state = self.state()
        state["finished"], state["stop_reason"] = finished, reason
        if best is not None:
            state["best_iteration"] = best
        _atomic_write(self.root / "state.json", json.dumps(state, indent=1))

    def _write_metrics(self, iteration: int, stages: dict[str, dict[str, Any]]) -> None:
        _atomic_write(self.iter_dir(iteration) / "metrics.json", json.dumps(_metrics(iteration, stages), indent=1))

    def metrics(self, iteration: int) -> dict[str, Any]:
        path = self.root / f"iter_{iteration:03d}" / "metrics.json"
        if not path.is_file():
            return {"iteration": iteration}
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            # metrics.json is state.json's entry for the iteration, flattened: read it from there instead.
            return _metrics(iteration, self.state()["iterations"].get(str(iteration), {}))


def _metrics(iteration: int, stages: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """An iteration's metrics: every finished stage's info in one mapping, their durations under stage_seconds."""
    metrics: dict[str, Any] = {"iteration": iteration, "stage_seconds": {}}
    for stage, info in stages.items():
        info = dict(info)
        metrics["stage_seconds"][stage] = info.pop("seconds", None)
        if stage.startswith("fold_"):  # out-of-fold students: one entry each, not merged into the iteration's
            metrics.setdefault("folds", {})[stage] = info
        else:
            metrics.update(info)
    # Out-of-fold students trained side by side (several processes): the wall time they took against the sum of
    # their own times, which is what one after another would have taken at the same speed.
    apart = [stage for stage, info in metrics.get("folds", {}).items() if "own_seconds" in info]
    if apart:
        wall = round(sum(metrics["stage_seconds"][stage] or 0 for stage in apart), 2)
        summed = round(sum(metrics["folds"][stage]["own_seconds"] for stage in apart), 2)
        metrics["folds_side_by_side"] = {"folds": len(apart), "wall_seconds": wall, "summed_seconds": summed,
                                         "saved_seconds": round(summed - wall, 2)}
    return metrics


def _read_json(path: Path, remedy: str) -> Any:
    """A JSON file of the run directory; RunStateError naming it (and what to do) when it is unreadable or corrupt."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunStateError(f"{path}: cannot read it ({exc}); {remedy}") from None
