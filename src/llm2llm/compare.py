"""`llm2llm compare`: LLM2LLM against the baselines and its own ablations, on the same seeds, student, teacher
and test set, with repeats — a table shaped like the paper's Table 2 (method, #seed, #augmented, test accuracy
mean ± std) and a plot.

Every method × repeat is an ordinary run in <output_dir>/<name>/<method>/r<k>-<config hash>/, so compare resumes
like `llm2llm run` after a crash or Ctrl-C, and a finished run with the same config is reused without loading a
model or calling the teacher. Repeat k uses `seed + k`. The count-matched methods (auggpt, eda, more_data,
one_shot) add as many examples as the same repeat's llm2llm run added, so methods meet at equal data size: the
llm2llm row with the same extra overrides where there is one ('eda_e2=eda student.epochs=2' matches
'llm2llm_e2=llm2llm student.epochs=2'), else the row labelled llm2llm.
"""

from __future__ import annotations

import difflib
import json
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from llm2llm import markdown as tables
from llm2llm.config import Config, load_config
from llm2llm.data import content_hash
from llm2llm.errors import ConfigError
from llm2llm.report import rows
from llm2llm.runstore import RESUMABLE_CHANGES, RunStore, flatten

# Each method is the user's config plus these overrides (see `augment.*` and `student.continue_training`).
METHODS: dict[str, list[str]] = {
    "finetune": ["loop.iterations=1"],  # the seeds alone, with the student recipe of the config
    "llm2llm": [],
    "auggpt": ["augment.method=auggpt", "loop.iterations=1"],
    "eda": ["augment.method=eda", "loop.iterations=1"],
    "more_data": ["augment.method=more_data", "loop.iterations=1"],
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


def config_hash(config: Config) -> str:
    """What makes two runs give the same result: the config's values that differ from the defaults, NOT_HASHED keys
    left out (so a key added in a later version, at its default, does not rename finished runs)."""
    flat, defaults = flatten(config.model_dump(mode="json")), flatten(Config().model_dump(mode="json"))
    return content_hash({k: v for k, v in flat.items() if k not in NOT_HASHED and v != defaults.get(k)}, length=8)


def compare(config_path: Path | None, overrides: list[str], methods: list[Method], repeats: int,
            run: Callable[[Config], RunStore | None], log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Run (or reuse) every method × repeat; write compare.json/.md/.png in <output_dir>/<name>/; return the results.
    `run` may return None for a run it chose not to start: the table then covers finished runs only."""
    base = load_config(config_path, overrides)
    root = base.run_dir
    labels = [method.label for method in methods]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"method labels repeat: {labels}")
    if "llm2llm" not in labels and any(_match(method, methods) == "llm2llm" for method in methods):
        methods = [Method("llm2llm", "llm2llm"), *methods]  # the count to match comes from the plain loop
    for method in methods:  # every config checked before hours of training
        _config(config_path, overrides, method, base.seed, 0, root, count=1)

    results: list[dict[str, Any]] = []
    for repeat in range(repeats):
        added: dict[str, int] = {}  # examples each llm2llm row added in this repeat
        for method in sorted(methods, key=lambda m: m.base != "llm2llm"):  # loops first: they set the counts
            match = _match(method, methods)
            count = added.get(match) if match else None
            if match and not count:
                why = f"{match} added no examples" if match in added else f"no {match} run to match"
                log(f"{method.label} r{repeat}: skipped, {why}")
                results.append({"method": method.label, "repeat": repeat, "skipped": why})
                continue
            config = _config(config_path, overrides, method, base.seed, repeat, root, count)
            store = RunStore(config.run_dir)
            # Reused only when finished with the same settings; otherwise run() resumes it (or names what changed).
            reused = (store.root / "config.yaml").is_file() and store.state().get("finished") and not store.changes(config) - NOT_HASHED
            log(f"{method.label} r{repeat}: {'reused' if reused else 'running'} {config.run_dir}")
            if not reused:
                store = run(config)
            if store is None:  # the caller chose not to run it (a report of finished runs only)
                results.append({"method": method.label, "repeat": repeat, "skipped": "not run yet"})
                continue
            result = {"method": method.label, "repeat": repeat, "seed": config.seed, "run_dir": str(config.run_dir), **_summary(store)}
            results.append(result)
            if method.base == "llm2llm":
                added[method.label] = result["augmented"]
    summary = {"root": str(root), "config": str(config_path) if config_path else None, "overrides": overrides, "repeats": repeats,
               "methods": [{"label": m.label, "method": m.base, "overrides": METHODS[m.base] + m.overrides} for m in methods],
               "table": table_rows(results, [m.label for m in methods]), "runs": results}
    root.mkdir(parents=True, exist_ok=True)
    (root / "compare.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    (root / "compare.md").write_text(markdown(summary, base), encoding="utf-8")
    plot(summary, root / "compare.png", base.name)
    return summary


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
    best = store.state().get("best_iteration")
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
        "minutes": round(sum(m["minutes"] for m in metrics), 1),
        "stop_reason": store.state().get("stop_reason"),
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
            "minutes": round(sum(r["minutes"] for r in runs), 1),
        })
    return table


def _accuracy(row: dict[str, Any]) -> str:
    if row["test_mean"] is None:
        return "—"
    return f"{row['test_mean']:.1f}" + (f" ± {row['test_std']:.1f}" if row["test_std"] is not None else "")


HEADERS = ["method", "#seed", "#augmented", "test acc (%)", "vs finetune [95% CI]", "per repeat", "teacher requests",
           "minutes"]


def _difference(row: dict[str, Any]) -> str:
    diff = row.get("vs_reference")
    if diff is None:
        return "—"
    return f"{diff['mean']:+.1f} [{diff['low']:+.1f}, {diff['high']:+.1f}]" + (" **real**" if diff["real"] else "")


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:g}" if float(value).is_integer() else f"{value:.1f}"


def cells(row: dict[str, Any]) -> list[str]:
    return [
        row["method"], _number(row["seeds"]), _number(row["augmented"]), _accuracy(row), _difference(row),
        ", ".join(f"{a:.1f}" for a in row["test_runs"]) + (f" ({row['skipped']} skipped)" if row["skipped"] else ""),
        _number(row["teacher_requests"]), _number(row["minutes"]),
    ]


def markdown(summary: dict[str, Any], base: Config) -> str:
    lines = [f"# {base.name}: methods compared", "",
             f"Task {base.task.type}; student {base.student.model} ({base.student.finetune}, {base.student.epochs} epochs, "
             f"lr {base.student.learning_rate or 'default'}); teacher {base.teacher.model}; {summary['repeats']} repeat(s), "
             "seed + k for repeat k. Test accuracy of each run's final student; mean ± sample std over repeats.", "",
             tables.table(HEADERS, (cells(row) for row in summary["table"]))]
    lines += ["", "Methods (overrides of the config):", ""]
    lines += [f"- `{m['label']}`: {' '.join(m['overrides']) or '(the config as is)'}" for m in summary["methods"]]
    lines += ["", "![comparison](compare.png)", ""]
    return "\n".join(lines)


def plot(summary: dict[str, Any], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = [row for row in summary["table"] if row["test_mean"] is not None]
    figure, axis = plt.subplots(figsize=(6.5, 0.5 * len(table) + 1.5))
    positions = range(len(table))
    axis.barh(list(positions), [row["test_mean"] for row in table], xerr=[row["test_std"] or 0 for row in table],
              color="#8fb3d9", capsize=4)
    for position, row in zip(positions, table):
        axis.plot(row["test_runs"], [position] * len(row["test_runs"]), "k.", alpha=0.7)
    axis.set_yticks(list(positions), [row["method"] for row in table])
    axis.invert_yaxis()
    axis.set_xlabel("test accuracy (%) — bars: mean ± std, dots: repeats")
    axis.set_title(title)
    axis.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
