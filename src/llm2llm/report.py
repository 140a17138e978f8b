"""Per-iteration report from the run directory alone: a table, report.md and accuracy.png (paper Fig. 2 shape); the
browsable report.html is report_html.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from llm2llm import markdown as tables
from llm2llm.runstore import RunStore

# (header, metrics key): the terminal table stays within 80 columns; report.md adds the wide ones.
COLUMNS = [
    ("iter", "iteration"),
    ("seed acc", "seed_accuracy"),
    ("oof acc", "oof_accuracy"),
    ("test acc", "test_accuracy"),
    ("|D_i|", "train_examples"),
    ("parents", "parents"),
    ("asked", "requests"),
    ("kept", "accepted"),
    ("rej", "rejected"),
    ("tokens", "teacher_tokens"),
    ("min", "minutes"),
]
WIDE_COLUMNS = COLUMNS + [
    ("verified", "verify_requests"),
    ("test overlap", "test_overlap_flagged"),
    ("cost", "teacher_cost"),
    ("rejected by reason", "rejected_by_reason"),
    ("train tok/s", "train_tokens_per_s"),
    ("stage seconds", "stage_seconds"),
]


def rows(store: RunStore) -> list[dict[str, Any]]:
    result = []
    for iteration in store.iterations():
        metrics = store.metrics(iteration)
        if len(metrics) <= 2 and "train_examples" not in metrics:
            continue  # D_i written, nothing run on it yet
        if "teacher_prompt_tokens" in metrics:
            metrics["teacher_tokens"] = metrics["teacher_prompt_tokens"] + metrics["teacher_completion_tokens"]
        metrics["minutes"] = round(sum(v or 0 for v in metrics.get("stage_seconds", {}).values()) / 60, 1)
        result.append(metrics)
    return result


def _cell(key: str, value: Any) -> str:
    if value is None or value == {}:
        return "—" if value is None else "0"
    if key.endswith("accuracy"):
        return f"{value:.1%}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v:g}" if isinstance(v, (int, float)) else f"{k} {v}" for k, v in value.items() if v is not None)
    return str(value)


def named_best(store: RunStore) -> dict[str, Any] | None:
    """The iteration a finished run names as the student to take (RunStore.best_iteration, derived from the stages'
    records, so a rule changed since the run finished applies); None before the run finishes or without an estimate."""
    return store.best_iteration() if store.state().get("finished") else None


def best_line(store: RunStore) -> str:
    """Which iteration's student to take, as the run names it (by out-of-fold accuracy, never the test set)."""
    best = named_best(store)
    if not best:
        return ""
    return (f"best iteration: {best['iteration']} (out-of-fold accuracy {best['oof_accuracy']:.1%}); "
            f"its student is iter_{best['iteration']:03d}/student")


def table(store: RunStore) -> Table:
    config = store.config()
    state = store.state()
    data = rows(store)
    reasons = "; ".join(
        f"iter {m['iteration']}: {_cell('', m['rejected_by_reason'])}" for m in data if m.get("rejected_by_reason")
    )
    best = best_line(store)
    caption = (state.get("stop_reason") or "in progress") + (f"\n{best}" if best else "") + (
        f"\nrejected by reason — {reasons}" if reasons else "")
    title = f"{config.name}: {config.task.type} · student {config.student.model} · teacher {config.teacher.model}"
    # Names, model paths and reasons are the user's text: escaped, or rich reads "[...]" in them as markup.
    result = Table(title=escape(title), caption=escape(caption), padding=(0, 1))
    for header, _ in COLUMNS:
        result.add_column(header, justify="right")
    for metrics in data:
        result.add_row(*(escape(_cell(key, metrics.get(key))) for _, key in COLUMNS))
    return result


def wide_row(metrics: dict[str, Any]) -> list[str]:
    """An iteration's cells under WIDE_COLUMNS, as report.md and report.html show them."""
    return [_cell(key, metrics.get(key)) for _, key in WIDE_COLUMNS]


def markdown(store: RunStore) -> str:
    body = tables.table([header for header, _ in WIDE_COLUMNS], (wide_row(metrics) for metrics in rows(store)))
    config = store.config()
    head = f"# {config.name}\n\nTask {config.task.type}; student {config.student.model} ({config.student.finetune}); teacher {config.teacher.model}.\n\n"
    best = best_line(store)
    head += f"{best[0].upper() + best[1:]}.\n\n" if best else ""
    donor = store.info(0, "finetune").get("reused_from")
    shared = f" Iteration 0 was taken from {donor} (the same seed, data and student recipe)." if donor else ""
    return head + stop_line(store.state()) + shared + side_by_side_line(store) + "\n\n" + body + "\n\n![accuracy](accuracy.png)\n"


def side_by_side_line(store: RunStore) -> str:
    """How much wall time training out-of-fold students side by side (several processes) saved, where it did."""
    parts = [(m["iteration"], m["folds_side_by_side"]) for m in rows(store) if m.get("folds_side_by_side")]
    if not parts:
        return ""
    summed, wall = sum(part["summed_seconds"] for _, part in parts), sum(part["wall_seconds"] for _, part in parts)
    folds = sum(part["folds"] for _, part in parts)
    return (f" {folds} out-of-fold students trained side by side, one per process: {wall:.0f} s of wall time for "
            f"{summed:.0f} s of training and evaluation, {summed - wall:.0f} s saved against one after another.")


def stop_line(state: dict[str, Any]) -> str:
    """Why the run ended (or what halted it), as the README promises the report says."""
    reason = state.get("stop_reason")
    if state.get("finished"):
        return f"Finished: {reason or 'completed'}."
    return f"Not finished: {reason}." if reason else "In progress (or interrupted): run the same command to continue."


def plot(store: RunStore, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = rows(store)
    figure, axis = plt.subplots(figsize=(6, 4))
    for key, label, marker in (("seed_accuracy", "seed (train) accuracy", "o"), ("oof_accuracy", "out-of-fold accuracy", "^"),
                               ("test_accuracy", "test accuracy", "s")):
        points = [(m["iteration"], 100 * m[key]) for m in data if m.get(key) is not None]
        if points:
            axis.plot(*zip(*points), marker=marker, label=label)
    axis.set_xlabel("LLM2LLM iteration")
    axis.set_ylabel("accuracy (%)")
    axis.set_title(store.config().name)
    axis.grid(alpha=0.3)
    axis.legend()
    if data:
        axis.set_xticks([m["iteration"] for m in data])
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def write(store: RunStore) -> list[Path]:
    """report.md, accuracy.png and report.html (report_html.py: the same and more, browsable offline)."""
    from llm2llm import report_html

    (store.root / "report.md").write_text(markdown(store), encoding="utf-8")
    return [store.root / "report.md", plot(store, store.root / "accuracy.png"), report_html.write(store)]
