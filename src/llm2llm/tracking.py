"""Experiment tracking (`report_to`, as in transformers): a run's config, every finished stage's metrics and each
iteration's training loss per step go to TensorBoard, Weights & Biases or MLflow.

Trackers watch the run directory rather than the loop: each stage marker the run writes (RunStore.observers) is
logged once per tracker, with the iteration as its step (`iteration/seed_accuracy`, `iteration/test_accuracy`, ...);
a finished fine-tune also sends its loss per step (`train_loss/iter_000`). Stages finished before a tracker was
there (a resumed run, a tracker added on resume, an iteration 0 taken from another run) are caught up when the run
starts. What each tracker has logged, and the wandb and mlflow run ids, are kept in <run>/tracking.json, so a resumed
run goes on logging into the same tracked run. None of the trackers is a dependency of llm2llm: each is imported
here, when asked for, with its install hint.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Protocol

from llm2llm.config import Config, config_to_yaml
from llm2llm.errors import ConfigError, Llm2llmWarning
from llm2llm.runstore import RunStore, flatten

# report_to name → (module that must be importable, install hint)
PACKAGES = {
    "tensorboard": ("tensorboard", "pip install 'llm2llm[tensorboard]'"),
    "wandb": ("wandb", "pip install 'llm2llm[wandb]'"),
    "mlflow": ("mlflow", "pip install 'llm2llm[mlflow]'"),
}
LEDGER = "tracking.json"


def check_trackers(config: Config) -> None:
    """Raise ConfigError naming the package and its install hint for a tracker that cannot be imported (preflight:
    found in seconds, before the run directory is written)."""
    for name in config.report_to:
        module, hint = PACKAGES[name]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"report_to: {name} needs the {module} package, which is not installed: {hint} "
                              f"(or remove {name} from report_to)")


class Tracker(Protocol):
    def log_config(self, config: Config) -> None: ...

    def log_scalars(self, values: dict[str, float], step: int, axis: str) -> None:
        """Values that share one x axis: `axis` names it ('iteration', 'train_step')."""

    def close(self, failed: bool) -> None: ...


@contextmanager
def tracking(config: Config, store: RunStore) -> Iterator[None]:
    """Log the run to the trackers in config.report_to while the block runs: finished stages at once, new ones as
    their markers are written."""
    if not config.report_to:
        yield
        return
    check_trackers(config)
    ledger_path = store.root / LEDGER
    ledger = json.loads(ledger_path.read_text(encoding="utf-8")) if ledger_path.is_file() else {}
    trackers: dict[str, Tracker] = {}
    for name in config.report_to:
        entry = ledger.setdefault(name, {"logged": []})
        try:
            trackers[name] = BACKENDS[name](store, config, entry)
            if not entry.get("config_logged"):
                trackers[name].log_config(config)
                entry["config_logged"] = True
        except Exception as exc:  # whatever the tracker raises (an unreachable server, a bad URI), say which
            for started in trackers.values():
                started.close(failed=True)
            raise ConfigError(f"report_to: {name} could not start ({type(exc).__name__}: {exc}); fix it, or remove {name} "
                              "from report_to") from None
    _save(ledger_path, ledger)

    def observe(iteration: int, stage: str, info: dict[str, Any]) -> None:
        for name, tracker in list(trackers.items()):
            done = ledger[name]["logged"]
            if f"{iteration}/{stage}" in done or stage.startswith("fold_"):
                continue
            try:
                _log_stage(tracker, store, iteration, stage, info)
            except Exception as exc:  # a tracker only watches: its failure must not cost hours of training
                warnings.warn(f"report_to: {name} failed ({type(exc).__name__}: {exc}); the run goes on without it",
                              Llm2llmWarning, stacklevel=2)
                del trackers[name]
                continue
            done.append(f"{iteration}/{stage}")
        _save(ledger_path, ledger)

    for iteration, stages in sorted(store.state()["iterations"].items(), key=lambda item: int(item[0])):
        for stage, info in stages.items():  # stages finished before these trackers were watching
            observe(int(iteration), stage, info)
    store.observers.append(observe)
    failed = True
    try:
        yield
        failed = False
    finally:
        store.observers.remove(observe)
        for tracker in trackers.values():
            tracker.close(failed)


def _log_stage(tracker: Tracker, store: RunStore, iteration: int, stage: str, info: dict[str, Any]) -> None:
    values = {}
    for key, value in flatten({key: value for key, value in info.items() if key != "seconds"}).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values[f"iteration/{key.replace('.', '/')}"] = value
    if isinstance(info.get("seconds"), (int, float)):
        values[f"iteration/seconds/{stage}"] = info["seconds"]
    if values:
        tracker.log_scalars(values, iteration, "iteration")
    if stage == "finetune":
        for row in store.train_log(iteration):
            tracker.log_scalars({f"train_loss/iter_{iteration:03d}": row["loss"]}, row["step"], "train_step")


def _save(path: Path, ledger: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(ledger, indent=1), encoding="utf-8")
    os.replace(tmp, path)


# ── backends ────────────────────────────────────────────────────────────────────────────────────
class TensorBoardTracker:
    """Event files in <run>/tensorboard (`tensorboard --logdir runs/` shows every run)."""

    def __init__(self, store: RunStore, config: Config, entry: dict[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(store.root / "tensorboard"))

    def log_config(self, config: Config) -> None:
        # Indented four spaces: TensorBoard renders text as markdown, and this keeps the YAML a code block.
        self.writer.add_text("config", "\n".join("    " + line for line in config_to_yaml(config).splitlines()))

    def log_scalars(self, values: dict[str, float], step: int, axis: str) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def close(self, failed: bool) -> None:
        self.writer.close()


class WandbTracker:
    """A W&B run: offline files in <run>/wandb (upload later with `wandb sync`) unless WANDB_MODE says otherwise or
    WANDB_API_KEY is set; project from WANDB_PROJECT (default llm2llm). A resumed llm2llm run resumes its W&B run."""

    def __init__(self, store: RunStore, config: Config, entry: dict[str, Any]) -> None:
        import wandb

        entry.setdefault("id", secrets.token_hex(4))
        # Online needs a key; without one wandb would stop and ask for it on the terminal, in the middle of a run.
        mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "llm2llm"), name=config.name, id=entry["id"], resume="allow",
            dir=str(store.root), mode=mode, config=config.model_dump(mode="json"), reinit="create_new",
            settings=wandb.Settings(console="off", silent=True),  # rich draws the progress bars: leave the terminal alone
        )
        self.run.define_metric("iteration")
        self.run.define_metric("iteration/*", step_metric="iteration")
        self.run.define_metric("train_step")
        self.run.define_metric("train_loss/*", step_metric="train_step")

    def log_config(self, config: Config) -> None:
        pass  # given to wandb.init, which keeps it with the run

    def log_scalars(self, values: dict[str, float], step: int, axis: str) -> None:
        self.run.log({axis: step, **values})

    def close(self, failed: bool) -> None:
        self.run.finish(exit_code=1 if failed else 0)


class MlflowTracker:
    """An MLflow run in MLFLOW_TRACKING_URI, else in a local store, <run>/mlflow.db (SQLite, MLflow's own default
    backend; artifacts in <run>/mlartifacts): `mlflow ui --backend-store-uri sqlite:///runs/<name>/mlflow.db`.
    Experiment from MLFLOW_EXPERIMENT_NAME (default llm2llm). The config goes in as parameters and as config.yaml."""

    def __init__(self, store: RunStore, config: Config, entry: dict[str, Any]) -> None:
        from mlflow import MlflowClient

        local = not os.environ.get("MLFLOW_TRACKING_URI")
        uri = f"sqlite:///{store.root.resolve() / 'mlflow.db'}" if local else os.environ["MLFLOW_TRACKING_URI"]
        self.client = MlflowClient(tracking_uri=uri)
        if entry.get("uri") != uri:  # a new store (or the first time): a new run there, and everything logged again
            entry.clear()
            entry.update({"uri": uri, "logged": []})
            name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "llm2llm")
            experiment = self.client.get_experiment_by_name(name)
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(
                name, artifact_location=(store.root.resolve() / "mlartifacts").as_uri() if local else None)
            entry["run_id"] = self.client.create_run(experiment_id, run_name=config.name,
                                                     tags={"llm2llm.run_dir": str(store.root.resolve())}).info.run_id
        self.run_id = entry["run_id"]

    def log_config(self, config: Config) -> None:
        from mlflow.entities import Param

        # MLflow refuses to change a parameter once logged: they are logged once, and config.yaml (an artifact,
        # rewritten on resume) is the record of what a resumed run changed.
        params = [Param(key, json.dumps(value) if not isinstance(value, str) else value)
                  for key, value in flatten(config.model_dump(mode="json")).items()]
        for start in range(0, len(params), 100):  # log_batch takes at most 100 parameters a call
            self.client.log_batch(self.run_id, params=params[start:start + 100])
        self.client.log_text(self.run_id, config_to_yaml(config), "config.yaml")

    def log_scalars(self, values: dict[str, float], step: int, axis: str) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(key, float(value), now, step) for key, value in values.items()])

    def close(self, failed: bool) -> None:
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")


BACKENDS = {"tensorboard": TensorBoardTracker, "wandb": WandbTracker, "mlflow": MlflowTracker}
