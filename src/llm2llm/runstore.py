"""The run directory: layout, frozen config, stage done-markers (state.json) and per-iteration metrics.

Every write is tmp + rename, so a crash leaves either the old file or the new one. A stage counts as done only
once its outputs are written and its marker is in state.json; anything else is redone from its inputs.
"""

from __future__ import annotations

import difflib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from llm2llm.config import Config, config_to_yaml
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
    "teacher.max_concurrency",
    "teacher.retry_wait_s",
    "teacher.retry_max_wait_s",
    "teacher.max_failure_ratio",
    "teacher.timeout_s",
    "teacher.max_retries",
    "eval.test_every_iteration",
}


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


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

    # ── config ──────────────────────────────────────────────────────────────────────────────────
    def open(self, config: Config, force: bool = False) -> None:
        """Create the run, or check that a resumed run uses the same config (refused with a diff unless force)."""
        self.root.mkdir(parents=True, exist_ok=True)
        frozen_path = self.root / "config.yaml"
        new_text = config_to_yaml(config)
        if frozen_path.is_file():
            old_text = frozen_path.read_text(encoding="utf-8")
            changed = self.changes(config) - RESUMABLE_CHANGES
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
        old = flatten(yaml.safe_load((self.root / "config.yaml").read_text(encoding="utf-8")))
        new, defaults = flatten(config.model_dump(mode="json")), flatten(Config().model_dump(mode="json"))
        return {key for key in old.keys() | new.keys()
                if old.get(key) != new.get(key) and not (key not in old and new[key] == defaults.get(key))}

    def config(self) -> Config:
        path = self.root / "config.yaml"
        if not path.is_file():
            raise RunStateError(f"{self.root} is not a run directory (no config.yaml)")
        return Config.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))

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
        shutil.rmtree(self.root / f"iter_{iteration:03d}" / "student", ignore_errors=True)

    # ── state ───────────────────────────────────────────────────────────────────────────────────
    def state(self) -> dict[str, Any]:
        path = self.root / "state.json"
        if not path.is_file():
            return {"iterations": {}, "finished": False}
        return json.loads(path.read_text(encoding="utf-8"))

    def done(self, iteration: int, stage: str) -> bool:
        return stage in self.state()["iterations"].get(str(iteration), {})

    def info(self, iteration: int, stage: str) -> dict[str, Any]:
        return self.state()["iterations"].get(str(iteration), {}).get(stage, {})

    def mark_done(self, iteration: int, stage: str, info: dict[str, Any]) -> None:
        state = self.state()
        state["iterations"].setdefault(str(iteration), {})[stage] = info
        _atomic_write(self.root / "state.json", json.dumps(state, indent=1))
        self._write_metrics(iteration, state["iterations"][str(iteration)])

    def set_finished(self, finished: bool, reason: str = "", best: dict[str, Any] | None = None) -> None:
        state = self.state()
        state["finished"], state["stop_reason"] = finished, reason
        if best is not None:
            state["best_iteration"] = best
        _atomic_write(self.root / "state.json", json.dumps(state, indent=1))

    def _write_metrics(self, iteration: int, stages: dict[str, dict[str, Any]]) -> None:
        metrics: dict[str, Any] = {"iteration": iteration, "stage_seconds": {}}
        for stage, info in stages.items():
            info = dict(info)
            metrics["stage_seconds"][stage] = info.pop("seconds", None)
            if stage.startswith("fold_"):  # out-of-fold students: one entry each, not merged into the iteration's
                metrics.setdefault("folds", {})[stage] = info
            else:
                metrics.update(info)
        _atomic_write(self.iter_dir(iteration) / "metrics.json", json.dumps(metrics, indent=1))

    def metrics(self, iteration: int) -> dict[str, Any]:
        path = self.root / f"iter_{iteration:03d}" / "metrics.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"iteration": iteration}
