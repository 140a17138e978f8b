"""`llm2llm compare`: LLM2LLM against the baselines and its own ablations, on the same seeds, student, teacher
and test set, with repeats — a table shaped like the paper's Table 2 (method, #seed, #augmented, test accuracy
mean ± std) and a plot.

Every method × repeat is an ordinary run in <output_dir>/<name>/<method>/r<k>-<config hash>/, so compare resumes
like `llm2llm run` after a crash or Ctrl-C, and a finished run with the same config is reused without loading a
model or calling the teacher. Repeat k uses `seed + k`. The count-matched methods (auggpt, eda, more_data,
one_shot) add as many examples as the same repeat's llm2llm run added, so methods meet at equal data size: the
llm2llm row with the same extra overrides where there is one ('eda_e2=eda student.epochs=2' matches
'llm2llm_e2=llm2llm student.epochs=2'), else the row labelled llm2llm. The finetune baseline runs first and the
loops take its iteration 0 instead of training it again (reuse.py).
"""

from __future__ import annotations

import difflib
import json
import shutil
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from llm2llm import markdown as tables, report_html
from llm2llm.config import Config, load_config
from llm2llm.data import content_hash
from llm2llm.errors import ConfigError
from llm2llm.report import rows
from llm2llm.reuse import start_from_donor
from llm2llm.runstore import RESUMABLE_CHANGES, RunStore, flatten

# Each method is the user's config plus these overrides (see `augment.*` and `student.continue_training`). The
# baselines train once and select nothing: select.by=train_errors says so (no out-of-fold students beside the one).
ONCE = ["loop.iterations=1", "select.by=train_errors"]
METHODS: dict[str, list[str]] = {
    "finetune": ONCE,  # the seeds alone, with the student recipe of the config
    "llm2llm": [],
    "auggpt": ["augment.method=auggpt", *ONCE],
    "eda": ["augment.method=eda", *ONCE],
    "more_data": ["augment.method=more_data", *ONCE],
    "one_shot": ["augment.one_shot=true", "loop.iterations=2"],  # paper Table 4
    "source_all": ["augment.source=all"],  # paper Table 6
    "continue_training": ["student.continue_training=true"],  # paper Table 5
}
COUNTED = {"auggpt", "eda", "more_data", "one_shot"}


@dataclass
class Method:
    """A row of the comparison: a method of METHODS, optionally with extra overrides under its own label."""

    label: str
    base: str
    overrides: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, spec: str) -> "Method":
        """'eda', or 'label=method key=value ...' (e.g. 'no_verify=llm2llm quality.verify=false')."""
        head, *overrides = spec.split()
        label, _, base = head.rpartition("=") if "=" in head else (head, "", head)
        if base not in METHODS:
            close = difflib.get_close_matches(base, list(METHODS), n=1)
            raise ConfigError(f"unknown method {base!r} in {spec!r}" + (f"; did you mean {close[0]}?" if close else "")
                              + f" Methods: {', '.join(METHODS)} (a variant is 'label=method key=value ...')")
        if not label.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"method label {label!r} must be letters, digits, - and _ (it names a folder)")
        return cls(label, base, overrides)


# Keys a finished run may differ in and still be reused: where it lives, speed, disk use, budget caps.
NOT_HASHED = (RESUMABLE_CHANGES - {"loop.iterations", "loop.patience"}) | {"name", "output_dir"}


# What config_hash compares against: the defaults of the paper's loop (select.by=train_errors, which were the
# defaults until the out-of-fold loop replaced them), so runs finished before that change keep their names.
HASH_BASE = {"select": {"by": "train_errors"}}


def config_hash(config: Config) -> str:
    """What makes two runs give the same result: the config's values that differ from HASH_BASE's, NOT_HASHED keys
    left out (so a key added in a later version, at its default, does not rename finished runs)."""
    flat, defaults = flatten(config.model_dump(mode="json")), flatten(Config(**HASH_BASE).model_dump(mode="json"))
    return content_hash({k: v for k, v in flat.items() if k not in NOT_HASHED and v != defaults.get(k)}, length=8)


def compare(config_path: Path | None, overrides: list[str], methods: list[Method], repeats: int,
            run: Callable[[Config], RunStore | None], log: Callable[[str], None] = lambda _: None,
            keep_students: bool = False) -> dict[str, Any]:
    """Run (or reuse) every method × repeat; write compare.json/.md/.png/.html in <output_dir>/<name>/; return the results.
    `run` may return None for a run it chose not to start: the table then covers finished runs only. Finished runs of
    methods (and repeats) a previous compare of this name had, and this one does not, stay in the table. Each run's
    student weights are deleted once its repeat is done, unless keep_students (the table needs none)."""
    base = load_config(config_path, overrides)
    root = base.run_dir
    labels = [method.label for method in methods]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"method labels repeat: {labels}")
    previous = _previous_summary(root)
    carried = _carried_methods(previous, methods)
    every = methods + carried
    if "llm2llm" not in [m.label for m in every] and any(_match(method, every) == "llm2llm" for method in methods):
        methods = [Method("llm2llm", "llm2llm"), *methods]  # the count to match comes from the plain loop
        every = methods + carried
    for method in methods:  # every config checked before hours of training
        _config(config_path, overrides, method, base.seed, 0, root, count=1)
    log(f"{len(methods) * repeats} runs in {root}; `llm2llm status {root}` shows each one")

    results: list[dict[str, Any]] = []
    progress = _Progress(len(methods) * repeats, log)
    for repeat in range(max(repeats, previous.get("repeats", 0))):
        added: dict[str, int] = {}  # examples each llm2llm row added in this repeat
        finished: list[RunStore] = []  # this repeat's runs, whose students go once it is done
        for method in sorted(every, key=_order):  # the fine-tune first (the loops reuse it), then the loops (they set the counts)
            planned = method in methods and repeat < repeats  # else: only a finished run is reported, nothing is started
            match = _match(method, every)
            count = added.get(match) if match else None
            if match and not count:
                if planned:
                    why = f"{match} added no examples" if match in added else f"no {match} run to match"
                    progress.skip(method.label, repeat, why)
                    results.append({"method": method.label, "repeat": repeat, "skipped": why})
                continue
            config = _config(config_path, overrides, method, base.seed, repeat, root, count)
            store = RunStore(config.run_dir)
            # Reused only when finished with the same settings; otherwise run() resumes it (or names what changed).
            reused = (store.root / "config.yaml").is_file() and store.state().get("finished") and not store.changes(config) - NOT_HASHED
            if not planned and not reused:
                continue
            if planned:
                progress.start(method.label, repeat, "reused" if reused else "running", config.run_dir)
            if not reused:
                donor = start_from_donor(config, root)
                if donor is not None:
                    log(f"  iteration 0 taken from {donor} (the same seed, data and student recipe): not trained twice")
                store = run(config)
                if store is None:  # the caller chose not to run it (a report of finished runs only)
                    if donor is not None:
                        shutil.rmtree(config.run_dir, ignore_errors=True)  # leave no half-made run behind
                    results.append({"method": method.label, "repeat": repeat, "skipped": "not run yet"})
                    continue
                progress.finish()
            if planned:
                finished.append(store)
            result = {"method": method.label, "repeat": repeat, "seed": config.seed, "run_dir": str(config.run_dir),
                      **({"asked": count} if count else {}), **_summary(store)}
            results.append(result)
            if method.base == "llm2llm":
                added[method.label] = result["augmented"]
        if not keep_students:
            for store in finished:  # after the repeat, so later runs of it could take iteration 0's student from them
                for iteration in store.iterations():
                    store.prune_student(iteration)
    place = {entry.get("label"): i for i, entry in enumerate(previous.get("methods", []))}  # earlier rows keep their place
    shown = sorted((m for m in every if any(r["method"] == m.label for r in results)), key=lambda m: place.get(m.label, len(place)))
    summary = {"root": str(root), "config": str(config_path) if config_path else None, "overrides": overrides,
               "repeats": max(repeats, previous.get("repeats", 0)),
               "methods": [{"label": m.label, "method": m.base, "overrides": METHODS[m.base] + m.overrides, "extra": m.overrides,
                            **({"carried": True} if m in carried else {})} for m in shown],
               "table": table_rows(results, [m.label for m in shown]), "runs": results}
    root.mkdir(parents=True, exist_ok=True)
    (root / "compare.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    (root / "compare.md").write_text(markdown(summary, base), encoding="utf-8")
    plot(summary, root / "compare.png", base.name)
    report_html.write_compare(summary, root, base.name)
    return summary


def compare_runs(root: Path) -> list[RunStore]:
    """The runs a compare keeps under <output_dir>/<name>/: <method label>/<run>/, each an ordinary run directory."""
    return [RunStore(path.parent) for path in sorted(Path(root).glob("*/*/config.yaml"))]


def _order(method: Method) -> int:
    return {"finetune": 0, "llm2llm": 1}.get(method.base, 2)


def _previous_summary(root: Path) -> dict[str, Any]:
    path = root / "compare.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}  # an unreadable table is rewritten from the runs on disk


def _carried_methods(previous: dict[str, Any], methods: list[Method]) -> list[Method]:
    """The rows of the last compare of this name that this one does not name (`--methods eda` after a full compare):
    their finished runs stay in compare.md; nothing of theirs is started."""
    labels, carried = {m.label for m in methods}, []
    for entry in previous.get("methods", []):
        extra = entry.get("extra")
        if extra is None:  # written before "extra" was stored: the method's own overrides come first
            own = METHODS.get(entry.get("method"), [])
            extra = entry.get("overrides", [])[len(own):] if entry.get("overrides", [])[:len(own)] == own else None
        if entry.get("label") not in labels and entry.get("method") in METHODS and extra is not None:
            carried.append(Method(entry["label"], entry["method"], list(extra)))
    return carried


class _Progress:
    """'run k of N' lines, and after each run that trained, the time left at the pace so far."""

    def __init__(self, total: int, log: Callable[[str], None]) -> None:
        self.total, self.log, self.number, self.seconds, self.trained = total, log, 0, 0.0, 0

    def start(self, label: str, repeat: int, action: str, run_dir: Path) -> None:
        self.number += 1
        self.started = time.perf_counter()
        self.log(f"run {self.number} of {self.total}: {label} r{repeat} {action} {run_dir}")

    def skip(self, label: str, repeat: int, why: str) -> None:
        self.number += 1
        self.log(f"run {self.number} of {self.total}: {label} r{repeat} skipped, {why}")

    def finish(self) -> None:
        took = time.perf_counter() - self.started
        self.seconds, self.trained = self.seconds + took, self.trained + 1
        left = self.total - self.number
        if left:
            eta = self.seconds / self.trained * left / 60
            self.log(f"  took {took / 60:.1f} min; about {eta:.0f} min left for the other {left} run(s) at this pace "
                     "(less where they are reused)")


def _match(method: Method, methods: list[Method]) -> str | None:
    """The llm2llm row whose count a count-matched method adds: the one with the same extra overrides, else 'llm2llm'.
    None for methods that add no examples, or whose variant sets augment.count itself (e.g. real data at 2x the seeds)."""
    if method.base not in COUNTED or any(o.startswith("augment.count=") for o in method.overrides):
        return None
    same = [m.label for m in methods if m.base == "llm2llm" and sorted(m.overrides) == sorted(method.overrides)]
    return same[0] if same else "llm2llm"


def _config(config_path: Path | None, overrides: list[str], method: Method, base_seed: int, repeat: int, root: Path,
            count: int | None) -> Config:
    extra = [*METHODS[method.base], *method.overrides, f"seed={base_seed + repeat}"] + ([f"augment.count={count}"] if count else [])
    try:
        config = load_config(config_path, [*overrides, *extra])
    except ConfigError as exc:
        raise ConfigError(f"method {method.label}: {exc}") from None
    config.output_dir, config.name = str(root / method.label), f"r{repeat}-{config_hash(config)}"
    return config


def _summary(store: RunStore) -> dict[str, Any]:
    """What a finished run contributes to the table: final test accuracy, data sizes, teacher use, time."""
    metrics = rows(store)
    seeds = metrics[0]["seeds"]
    tested = [m for m in metrics if m.get("test_accuracy") is not None]
    state = store.state()
    best = store.best_iteration()
    reused = [info for stages in state["iterations"].values() for info in stages.values() if info.get("reused_from")]
    return {
        "seeds": seeds,
        "augmented": metrics[-1]["train_examples"] - seeds,
        "iterations": len(metrics),
        "seed_accuracy": [m["seed_accuracy"] for m in metrics],
        "test_accuracy": tested[-1]["test_accuracy"] if tested else None,
        "test_by_iteration": [m.get("test_accuracy") for m in metrics],
        "oof_by_iteration": [m.get("oof_accuracy") for m in metrics],
        "best_iteration": best["iteration"] if best else None,
        "test_at_best": metrics[best["iteration"]].get("test_accuracy") if best else None,
        "teacher_requests": sum(m.get("requests", 0) + m.get("verify_requests", 0) for m in metrics),
        "rejected_by_reason": dict(sum((Counter(m.get("rejected_by_reason") or {}) for m in metrics), Counter())),
        "minutes": round(sum(m["minutes"] for m in metrics), 1),  # a reused stage counts its original time
        "reused_minutes": round(sum(info.get("seconds") or 0 for info in reused) / 60, 1),
        "reused_from": reused[0]["reused_from"] if reused else None,
        "stop_reason": state.get("stop_reason"),
    }


# Two-sided 95% quantiles of Student's t by degrees of freedom (for the paired interval over a handful of repeats).
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}


def paired_difference(values: dict[int, float], reference: dict[int, float]) -> dict[str, Any] | None:
    """Mean of value - reference over the repeats both have, with a 95% paired t interval; None under 2 pairs."""
    pairs = [values[k] - reference[k] for k in sorted(values.keys() & reference.keys())]
    if len(pairs) < 2:
        return None
    mean, df = statistics.mean(pairs), len(pairs) - 1
    half = T_975[max(d for d in T_975 if d <= df)] * statistics.stdev(pairs) / len(pairs) ** 0.5
    return {"mean": mean, "low": mean - half, "high": mean + half, "pairs": len(pairs), "real": mean - half > 0 or mean + half < 0}


def table_rows(results: list[dict[str, Any]], labels: list[str], reference: str = "finetune") -> list[dict[str, Any]]:
    """One row per method: mean ± sample std of the final test accuracy over the repeats that ran, and the paired
    difference from the reference row (the same repeat, so the same seed) with its 95% interval."""
    def by_repeat(label: str) -> dict[int, float]:
        return {r["repeat"]: 100 * r["test_accuracy"] for r in results
                if r["method"] == label and "skipped" not in r and r["test_accuracy"] is not None}

    table = []
    for label in labels:
        runs = [r for r in results if r["method"] == label and "skipped" not in r and r["test_accuracy"] is not None]
        accuracies = [100 * r["test_accuracy"] for r in runs]
        oof = [100 * r["oof_by_iteration"][-1] for r in runs if r.get("oof_by_iteration") and r["oof_by_iteration"][-1] is not None]
        at_best = [100 * r["test_at_best"] for r in runs if r.get("test_at_best") is not None]
        table.append({
            "vs_reference": paired_difference(by_repeat(label), by_repeat(reference)) if label != reference else None,
            "oof_mean": statistics.mean(oof) if oof else None,
            "test_at_best_mean": statistics.mean(at_best) if at_best else None,
            "method": label,
            "runs": len(runs),
            "skipped": sum(1 for r in results if r["method"] == label and "skipped" in r),
            "seeds": runs[0]["seeds"] if runs else None,
            "augmented": statistics.mean(r["augmented"] for r in runs) if runs else None,
            "test_mean": statistics.mean(accuracies) if accuracies else None,
            "test_std": statistics.stdev(accuracies) if len(accuracies) > 1 else None,
            "test_runs": [round(a, 1) for a in accuracies],
            "teacher_requests": statistics.mean(r["teacher_requests"] for r in runs) if runs else None,
            # A run's own minutes, mean over repeats (what the method costs); and what its runs spent here in all,
            # stages taken from another run not counted again.
            "minutes_per_run": round(statistics.mean(r["minutes"] for r in runs), 1) if runs else None,
            "minutes": round(sum(r["minutes"] - r.get("reused_minutes", 0) for r in runs), 1),
            "reused": sum(1 for r in runs if r.get("reused_from")),
            # Count-matched runs that got fewer examples than the loop they match (the teacher or the pool ran short).
            "asked": statistics.mean(r["asked"] for r in runs) if runs and all("asked" in r for r in runs) else None,
            "short": sum(1 for r in runs if r["augmented"] < r.get("asked", 0)),
        })
    return table


def _accuracy(row: dict[str, Any]) -> str:
    if row["test_mean"] is None:
        return "—"
    return f"{row['test_mean']:.1f}" + (f" ± {row['test_std']:.1f}" if row["test_std"] is not None else "")


HEADERS = ["method", "#seed", "#augmented", "test acc (%)", "vs finetune [95% CI]", "per repeat", "teacher requests",
           "min/run"]


def _difference(row: dict[str, Any]) -> str:
    diff = row.get("vs_reference")
    if diff is None:
        return "—"
    return f"{diff['mean']:+.1f} [{diff['low']:+.1f}, {diff['high']:+.1f}]" + (" **real**" if diff["real"] else "")


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:g}" if float(value).is_integer() else f"{value:.1f}"


def cells(row: dict[str, Any]) -> list[str]:
    augmented = _number(row["augmented"]) + (f" (short: asked {_number(row['asked'])})" if row.get("short") else "")
    return [
        row["method"], _number(row["seeds"]), augmented, _accuracy(row), _difference(row),
        ", ".join(f"{a:.1f}" for a in row["test_runs"]) + (f" ({row['skipped']} skipped)" if row["skipped"] else ""),
        _number(row["teacher_requests"]), _number(row.get("minutes_per_run", row["minutes"])),
    ]


def markdown(summary: dict[str, Any], base: Config) -> str:
    lines = [f"# {base.name}: methods compared", "",
             f"Task {base.task.type}; student {base.student.model} ({base.student.finetune}, {base.student.epochs} epochs, "
             f"lr {base.student.learning_rate or 'default'}); teacher {base.teacher.model}; {summary['repeats']} repeat(s), "
             "seed + k for repeat k. Test accuracy of each run's final student; mean ± sample std over repeats.", "",
             tables.table(HEADERS, (cells(row) for row in summary["table"])), ""]
    total = sum(row["minutes"] for row in summary["table"])
    lines += [f"min/run: a run's own stage minutes, mean over repeats (a stage taken from another run counts its original "
              f"time). These runs took {total:.0f} min in all, shared stages counted once."]
    reused = [row for row in summary["table"] if row.get("reused")]
    if reused:
        lines += [f"Iteration 0 (the same seed, data and student recipe) was trained once and shared: "
                  + ", ".join(f"{row['method']} ({row['reused']} of {row['runs']} runs)" for row in reused) + " took it from another method's run."]
    short = [row for row in summary["table"] if row.get("short")]
    if short:
        lines += [f"**Short of examples**: " + ", ".join(f"{row['method']} got {_number(row['augmented'])} of {_number(row['asked'])} "
                  f"on average ({row['short']} of {row['runs']} runs short)" for row in short)
                  + ": not compared at equal data size; the plot hatches these bars."]
    lines += ["", "Methods (overrides of the config):", ""]
    lines += [f"- `{m['label']}`: {' '.join(m['overrides']) or '(the config as is)'}"
              + (" (from an earlier compare)" if m.get("carried") else "") for m in summary["methods"]]
    lines += ["", "![comparison](compare.png)", ""]
    return "\n".join(lines)


def plot(summary: dict[str, Any], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = [row for row in summary["table"] if row["test_mean"] is not None]
    figure, axis = plt.subplots(figsize=(6.5, 0.5 * len(table) + 1.5))
    positions = range(len(table))
    bars = axis.barh(list(positions), [row["test_mean"] for row in table], xerr=[row["test_std"] or 0 for row in table],
                     color="#8fb3d9", capsize=4)
    for bar, row in zip(bars, table):
        if row.get("short"):  # fewer examples than matched: not a fair winner, and drawn so it does not look like one
            bar.set_color("#dddddd")
            bar.set_hatch("//")
            bar.set_edgecolor("#888888")
    for position, row in zip(positions, table):
        axis.plot(row["test_runs"], [position] * len(row["test_runs"]), "k.", alpha=0.7)
    axis.set_yticks(list(positions), [row["method"] + (f"\n(short: {_number(row['augmented'])} of {_number(row['asked'])} examples)"
                                                      if row.get("short") else "") for row in table])
    axis.invert_yaxis()
    axis.set_xlabel("test accuracy (%) — bars: mean ± std, dots: repeats")
    axis.set_title(title)
    axis.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
