"""report.html (one per run) and compare.html (one per comparison): single self-contained pages, from the run
directory alone, that open offline in any browser — the data inline as JSON, the script and style inline, no request
leaves the page (a Content-Security-Policy forbids it).

A run's page shows accuracy per iteration (seed, out-of-fold where there is one, test: the paper's Figure 2), the
per-iteration table, accuracy per label, the training loss per step, and a lineage browser: each seed example the
teacher was given, with what the student answered, and every example the teacher wrote from it, accepted or rejected
with the reason and the verifier's answer; filtered by label, iteration and outcome, searched by text.
The page itself is report_assets/page.html with report.css and report.js put in; the script only ever sets
text (never HTML) from the data, so a seed text holding markup shows as text.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
from collections import defaultdict
from importlib import resources
from pathlib import Path
from typing import Any

from llm2llm import report
from llm2llm.data import read_examples, read_jsonl
from llm2llm.runstore import RunStore


def write(store: RunStore) -> Path:
    """Write <run>/report.html; return its path."""
    config = store.config()
    title = f"{config.name}: LLM2LLM report"
    return _write_page(store.root / "report.html", title, {"kind": "run", **run_data(store)})


def write_compare(summary: dict[str, Any], root: Path, title: str) -> Path:
    """Write <root>/compare.html from compare's summary (compare.json); return its path."""
    from llm2llm.compare import HEADERS, cells

    runs = []
    for row in summary.get("runs", []):
        if "skipped" in row:
            continue
        page = Path(row["run_dir"]) / "report.html"
        runs.append({"method": row["method"], "repeat": row["repeat"], "seed": row.get("seed"),
                     "test_accuracy": row.get("test_accuracy"), "augmented": row.get("augmented"),
                     "test_by_iteration": row.get("test_by_iteration"), "oof_by_iteration": row.get("oof_by_iteration"),
                     "report": os.path.relpath(page, root) if page.is_file() else None})
    data = {"kind": "compare", "title": title, "subtitle": f"{summary.get('repeats')} repeat(s); test accuracy of each "
            "run's final student, mean ± sample std over repeats",
            "table": {"headers": HEADERS, "rows": [cells(row) for row in summary.get("table", [])]},
            "bars": [{"method": row["method"], "mean": row["test_mean"], "std": row["test_std"], "runs": row["test_runs"],
                      "short": bool(row.get("short"))} for row in summary.get("table", []) if row["test_mean"] is not None],
            "runs": runs}
    return _write_page(Path(root) / "compare.html", f"{title}: methods compared", data)


# ── a run's data ────────────────────────────────────────────────────────────────────────────────
def run_data(store: RunStore) -> dict[str, Any]:
    config, state = store.config(), store.state()
    metrics = report.rows(store)
    best = report.named_best(store)
    return {
        "title": config.name,
        "subtitle": f"task {config.task.type} · student {config.student.model} ({config.student.finetune}) · teacher "
                    f"{config.teacher.model} · select.by={config.select.by}",
        "status": report.stop_line(state),
        "best": report.best_line(store),
        "best_iteration": best["iteration"] if best else None,
        "accuracy": [{"iteration": m["iteration"], "seed": m.get("seed_accuracy"), "oof": m.get("oof_accuracy"),
                      "test": m.get("test_accuracy")} for m in metrics],
        "table": {"headers": [header for header, _ in report.WIDE_COLUMNS], "rows": [report.wide_row(m) for m in metrics]},
        "per_label": per_label(store, config.task.type),
        "loss": {str(i): [[row["step"], row["loss"]] for row in store.train_log(i)] for i in store.iterations() if store.train_log(i)},
        "lineage": lineage(store),
    }


def per_label(store: RunStore, task_type: str) -> dict[str, Any] | None:
    """Accuracy per label and iteration on the seeds, out of fold and on the test set; None for math (one answer a row)."""
    if task_type == "math":
        return None
    by_kind: dict[str, dict[str, dict[int, float]]] = {"seed": {}, "oof": {}, "test": {}}
    counts: dict[str, dict[str, int]] = {"seed": defaultdict(int), "test": defaultdict(int)}
    for i in store.iterations():
        it = store.root / f"iter_{i:03d}"
        sources = {"seed": [it / "seed_predictions.jsonl"], "oof": sorted((it / "folds").glob("fold_*.jsonl")),
                   "test": [it / "test_predictions.jsonl"]}
        for kind, paths in sources.items():
            rows = [row for path in paths if path.is_file() for row in read_jsonl(path)]
            if not rows:
                continue
            totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
            for row in rows:
                totals[str(row["label"])][0] += bool(row["correct"])
                totals[str(row["label"])][1] += 1
            for label, (right, total) in totals.items():
                by_kind[kind].setdefault(label, {})[i] = right / total
                if kind in counts:
                    counts[kind][label] = total
    labels = sorted({label for kind in by_kind.values() for label in kind})
    return {"labels": labels, "iterations": store.iterations(), "counts": {k: dict(v) for k, v in counts.items()},
            "accuracy": {kind: {label: [values.get(label, {}).get(i) for i in store.iterations()] for label in labels}
                         for kind, values in by_kind.items() if values}}


def lineage(store: RunStore) -> list[dict[str, Any]]:
    """Each seed the teacher wrote from, per iteration, with the student's answer and every reply made from it."""
    seed_path = store.root / "iter_000" / "train.jsonl"
    examples = {e.id: e for e in read_examples(seed_path)} if seed_path.is_file() else {}
    parents: list[dict[str, Any]] = []
    for i in store.iterations():
        it = store.root / f"iter_{i:03d}"
        children: dict[str, list[dict[str, Any]]] = defaultdict(list)
        if (it / "generated.jsonl").is_file():
            for example in read_examples(it / "generated.jsonl"):
                verified = bool((store.info(i, "generate") or store.info(i, "augment")).get("verify_requests"))
                children[example.parent_id or ""].append({
                    "outcome": "accepted", "id": example.id, "text": example.text, "label": example.label,
                    "choices": example.choices, "verifier": example.label if verified else None})
        if (it / "rejected.jsonl").is_file():
            for row in read_jsonl(it / "rejected.jsonl"):
                candidate = row.get("example") or {}
                verifier_reply = row["reason"] in ("label_mismatch", "unverified")
                children[row.get("parent_id") or ""].append({
                    "outcome": row["reason"], "detail": row.get("detail") or "",
                    # A reply rejected before it parsed has no example: its raw text is what there is to read.
                    "text": candidate.get("text") or (row.get("reply") if not verifier_reply else "") or "",
                    "raw": not candidate, "label": candidate.get("label"), "choices": candidate.get("choices"),
                    "verifier": row.get("reply") if verifier_reply else None})
        chosen = read_jsonl(it / "selection.jsonl") if (it / "selection.jsonl").is_file() else []
        order = [row["id"] for row in chosen] + [pid for pid in children if pid not in {row["id"] for row in chosen}]
        why = {row["id"]: row for row in chosen}
        generated = store.done(i, "generate") or store.done(i, "augment")
        for parent_id in order:
            parent = examples.get(parent_id)
            if not children.get(parent_id) and (parent_id not in why or not generated):
                continue  # the last iteration selects but does not generate: nothing was written from its parents
            selected = why.get(parent_id, {})
            parents.append({
                "iteration": i, "id": parent_id, "text": parent.text if parent else parent_id,
                "label": parent.label if parent else selected.get("label"), "choices": parent.choices if parent else None,
                "answer": selected.get("answer"), "why": selected.get("reason", "baseline" if parent_id in children else ""),
                "children": children.get(parent_id, [])})
    return parents


# ── the page ────────────────────────────────────────────────────────────────────────────────────
def _asset(name: str) -> str:
    return (resources.files("llm2llm") / "report_assets" / name).read_text(encoding="utf-8")


def render(title: str, data: dict[str, Any]) -> str:
    """The whole page as one string."""
    # Inside <script type="application/json">, only "</script" or "<!--" could end or confuse the block: with every
    # "<" (and ">", "&") escaped as a JSON \\u escape, no text from the run can.
    payload = json.dumps(_finite(data), ensure_ascii=False, allow_nan=False)
    payload = payload.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    parts = {"title": html.escape(title), "style": _asset("report.css"), "script": _asset("report.js"), "data": payload}
    # One pass over the template: a placeholder-like string inside the script or the data is left alone.
    return re.sub(r"\{\{(title|style|script|data)\}\}", lambda match: parts[match.group(1)], _asset("page.html"))


def _finite(value: Any) -> Any:
    """NaN and infinities as null: JSON has no spelling for them, and JSON.parse refuses Python's."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def _write_page(path: Path, title: str, data: dict[str, Any]) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render(title, data), encoding="utf-8")
    os.replace(tmp, path)
    return path
