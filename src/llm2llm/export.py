"""`llm2llm export`: what a finished run hands over, in the shapes the ecosystem reads.

    <out>/                     (default <run>/export)
      dataset/                 the grown training set D_i of the chosen iteration, ready for the Hub:
        README.md              dataset card: counts by label, teacher and verifier, filters and rejections, the command
        train.jsonl            one row per example with its lineage (origin, parent_id, iteration, teacher, prompt_hash,
        train.parquet          verifier_verdict)
        run_config.yaml        the run's frozen config (not config.yaml: a folder holding one is taken for a run)
      dataset_arrow/           the same rows as a `datasets` folder: datasets.load_from_disk(...)
      student/                 the chosen iteration's student as a model folder (student_export.py)
      export.json              what was exported, from which run and iteration

The chosen iteration is the run's best (by out-of-fold accuracy), else its last (finished.py). Everything is written
into a temporary folder beside <out> and renamed into place at the end, so a failure leaves nothing half-written.
`--push-to-hub REPO` then uploads dataset/ to the dataset repo REPO and student/ to the model repo REPO (created
private when new); it needs a Hugging Face token and the network, both checked before anything is written.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from llm2llm import markdown as tables
from llm2llm.config import Config
from llm2llm.data import read_examples
from llm2llm.errors import ExportError
from llm2llm.finished import Chosen, chosen_iteration, finished_run, run_task, student_dir
from llm2llm.models import BUNDLED
from llm2llm.runstore import RunStore

COLUMNS = {
    "id": "stable example id (seeds: from their content or data.id_field; teacher rows: gen-<iteration>-<parent>-<sample>)",
    "text": "the input text",
    "label": "the answer the student is trained to give",
    "choices": "multiple choice: the candidate answers (label is the index of the right one)",
    "origin": "seed (your data), teacher (written by the teacher), eda or pool (a baseline's rows)",
    "source": "where a seed row came from: file:line, or hf:<dataset>@<split> row N",
    "parent_id": "the seed row a generated row was written from",
    "iteration": "the loop iteration whose student got the parent wrong",
    "teacher": "the model that wrote the row",
    "prompt_hash": "key of the exact teacher request in the run's teacher_cache.sqlite",
    "verifier_verdict": "agreed: a blind verifier gave the row's label; not_verified: the check was off (empty for seeds)",
}


def export(run_dir: Path, out: Path | None = None, iteration: int | None = None, *, with_student: bool = True,
           adapter: bool = False, push_to_hub: str | None = None, command: str | None = None) -> dict[str, Any]:
    """Export the chosen iteration's dataset (and student) of the finished run in run_dir; return the manifest."""
    store = finished_run(run_dir)
    config = store.config()
    chosen = chosen_iteration(store, iteration)
    # Checked before anything is written.
    source = student_dir(store, chosen.iteration, "export the dataset alone with --no-student, ") if with_student else None
    if source is not None:
        from llm2llm.student_export import check_exportable

        check_exportable(config, source, adapter)
    token = hub_token(push_to_hub) if push_to_hub else None
    out = Path(out) if out is not None else store.root / "export"
    if out.exists() and not (out / "export.json").is_file():
        raise ExportError(f"{out} exists and is not an earlier export (no export.json); choose another folder with --out")
    try:
        import datasets  # noqa: F401 - checked now: the dataset folder and Parquet file are written with it
    except ImportError:
        raise ExportError("export writes the dataset with the datasets library: pip install 'llm2llm[hub]'") from None

    work = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        rows = dataset_rows(store, config, chosen.iteration)
        _write_dataset(store, config, chosen, rows, work, command)
        manifest = {"run": str(store.root.resolve()), "iteration": chosen.iteration, "chosen": chosen.why,
                    "rows": len(rows), "dataset": "dataset", "dataset_arrow": "dataset_arrow", "command": command}
        if source is not None:
            from llm2llm.student_export import export_student

            manifest["student"] = "student"
            manifest["student_info"] = export_student(store, config, chosen, source, work / "student", adapter=adapter)
        (work / "export.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        _swap_into_place(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    manifest["out"] = str(out)
    if push_to_hub:
        manifest["pushed"] = push(out, push_to_hub, token, with_student=source is not None)
    return manifest


# ── the dataset ─────────────────────────────────────────────────────────────────────────────────
def dataset_rows(store: RunStore, config: Config, iteration: int) -> list[dict[str, Any]]:
    """D_i with lineage, one flat row per example (every column present, None where it does not apply)."""
    examples = read_examples(store.root / f"iter_{iteration:03d}" / "train.jsonl")
    verified = {j for j in store.iterations() if (store.info(j, "generate") or store.info(j, "augment")).get("verify_requests")}
    multiple_choice = any(example.choices for example in examples)
    rows = []
    for example in examples:
        row = {"id": example.id, "text": example.text, "label": example.label}
        if multiple_choice:
            row["choices"] = example.choices
        verdict = None
        if example.origin == "teacher":
            verdict = "agreed" if example.iteration in verified else "not_verified"
        rows.append({**row, "origin": example.origin, "source": _short_source(example.source), "parent_id": example.parent_id,
                     "iteration": example.iteration, "teacher": example.teacher, "prompt_hash": example.prompt_hash,
                     "verifier_verdict": verdict})
    return rows


def _short_source(source: str | None) -> str | None:
    """file:line with the file's name only: a published dataset should not carry the paths of the machine it was made on."""
    if source is None or source.startswith(("hf:", "demo:")):
        return source
    path, _, line = source.rpartition(":")
    return f"{Path(path).name}:{line}" if path and line.isdigit() else Path(source).name


def _write_dataset(store: RunStore, config: Config, chosen: Chosen, rows: list[dict[str, Any]], work: Path,
                   command: str | None) -> None:
    import datasets

    datasets.disable_progress_bars()  # a bar per write of a few hundred rows; the command prints what it wrote
    features = {name: datasets.Value("string") for name in COLUMNS if not rows or name in rows[0]}
    features["iteration"] = datasets.Value("int32")
    if "choices" in features:
        features["choices"] = datasets.List(datasets.Value("string"))
    dataset = datasets.Dataset.from_list(rows, features=datasets.Features(features))
    folder = work / "dataset"
    folder.mkdir()
    with open(folder / "train.jsonl", "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    dataset.to_parquet(str(folder / "train.parquet"))
    shutil.copy2(store.root / "config.yaml", folder / "run_config.yaml")
    (folder / "README.md").write_text(dataset_card(store, config, chosen, rows, command), encoding="utf-8")
    dataset.save_to_disk(str(work / "dataset_arrow"))


def dataset_card(store: RunStore, config: Config, chosen: Chosen, rows: list[dict[str, Any]], command: str | None) -> str:
    """README.md of the dataset: YAML metadata the Hub reads, then what the rows are and how they were made."""
    i = chosen.iteration
    seeds = [row for row in rows if row["origin"] == "seed"]
    added = [row for row in rows if row["origin"] != "seed"]
    category = {"classification": "text-classification", "multiple_choice": "multiple-choice"}.get(config.task.type, "text-generation")
    size = "n<1K" if len(rows) < 1000 else "1K<n<10K" if len(rows) < 10_000 else "10K<n<100K"
    lines = ["---", f"pretty_name: {json.dumps(f'{config.name} (LLM2LLM, iteration {i})')}", "tags:", "- llm2llm", "- synthetic",
             "task_categories:", f"- {category}", "size_categories:", f"- {size}", "configs:", "- config_name: default",
             "  data_files:", "  - split: train", "    path: train.parquet", "---", "",
             f"# {config.name}: a training set grown with LLM2LLM", "",
             f"{len(seeds)} seed examples and {len(added)} examples added by the LLM2LLM loop (Lee et al., 2024, "
             "[arXiv 2403.15042](https://arxiv.org/abs/2403.15042)): a student was fine-tuned, the seed examples it got "
             "wrong were given to a teacher model, which wrote new examples like them, and the loop repeated. "
             f"These are the {len(rows)} rows iteration {i}'s student was trained on (D_{i}; {chosen.why}).", ""]
    # Rows by label: for tasks with a label set; math answers are numbers, one per row.
    if config.task.type != "math":
        by_label_seed, by_label_added = Counter(row["label"] for row in seeds), Counter(row["label"] for row in added)
        labels = sorted(by_label_seed.keys() | by_label_added.keys())
        lines += ["## Rows by label", "", tables.table(["label", "seed", "added", "all"], [
            [label, by_label_seed[label], by_label_added[label], by_label_seed[label] + by_label_added[label]] for label in labels]
            + [["**all**", len(seeds), len(added), len(rows)]]), ""]
    lines += ["## How the rows were made", "", *_provenance(store, config, rows, command), ""]
    rejected, asked = _rejections(store, i)
    if asked:
        lines += [f"## Teacher replies rejected ({sum(rejected.values())} of {asked})", "",
                  "Replies the checks above refused, by reason, over iterations 0 to "
                  f"{i - 1} (each iteration's rejected.jsonl in the run directory holds them):", "",
                  tables.table(["reason", "replies"], sorted(rejected.items(), key=lambda item: -item[1])) if rejected else "None.", ""]
    lines += ["## Columns", "", tables.table(["column", "meaning"], [[f"`{name}`", meaning] for name, meaning in COLUMNS.items()
                                                                   if name in rows[0]]), "",
              "Load it with `datasets.load_dataset(\"parquet\", data_files=\"train.parquet\")`, or "
              "`datasets.load_from_disk(\"dataset_arrow\")` beside this folder.", "",
              "## Terms of use", "", teacher_terms(config, rows), ""]
    return "\n".join(lines)


def _provenance(store: RunStore, config: Config, rows: list[dict[str, Any]], command: str | None) -> list[str]:
    quality, teacher = config.quality, config.teacher
    verifier = quality.verifier.model if quality.verifier else "the teacher itself, asked greedily"
    verify = run_task(store, config).verify_by_default if quality.verify is None else quality.verify
    verify_text = "on" if verify else "off" + (" (math: the arithmetic of each new problem is re-checked instead)"
                                                if config.task.type == "math" else "")
    made_by = _made_by(store)
    lines = [
        f"- Task: {config.task.type} — {config.task.description}" if config.task.type != "math" else "- Task: math word problems (GSM8K style)",
        f"- Teacher: {_teachers(config, rows)} ({teacher.type}), temperature {teacher.temperature}, "
        f"{teacher.samples_per_wrong} new example(s) per selected seed per iteration",
        f"- Seeds given to the teacher: select.by={config.select.by}" + (f", at most {config.select.max_parents} per iteration" if config.select.max_parents else ""),
        f"- Blind verifier ({verify_text}): {verifier}; it answers each new example shown only seed examples, and a row is "
        "kept only if its answer is the row's label",
        f"- Filters: near-duplicates (ROUGE-L ≥ {quality.near_duplicate_rouge_l} with an earlier row), test-set look-alikes "
        f"(ROUGE-L ≥ {quality.test_overlap_rouge_l} with a test row: {'dropped' if quality.drop_test_overlap else 'kept and listed'}), "
        f"replies longer than {quality.max_reply_ratio}× the longest seed, "
        + (f"replies unlike their seed (ROUGE-L < {quality.min_seed_rouge_l}), " if quality.min_seed_rouge_l else "")
        + "and the task's own parser and checks",
        f"- Student: `{config.student.model}` ({config.student.finetune} fine-tune, {config.student.epochs} epochs)",
        "- Made by: `llm2llm run run_config.yaml`, with the run's frozen config beside this card ([run_config.yaml](run_config.yaml))"
        + (f"; the command recorded in the run: `{made_by}`" if made_by else ""),
    ]
    if command:
        lines.append(f"- Exported by: `{command}`")
    return lines


def _made_by(store: RunStore) -> str | None:
    """The command that last wrote the run (run.lock.json), e.g. `llm2llm run configs/demo.yaml`."""
    try:
        return json.loads((store.root / "run.lock.json").read_text(encoding="utf-8")).get("command")
    except (OSError, ValueError, AttributeError):
        return None


def _rejections(store: RunStore, iteration: int) -> tuple[Counter[str], int]:
    """Rejected replies by reason, and teacher requests, over the iterations whose examples are in D_iteration."""
    rejected: Counter[str] = Counter()
    asked = 0
    for j in range(iteration):
        info = store.info(j, "generate")
        rejected.update(info.get("rejected_by_reason") or {})
        asked += info.get("requests", 0)
    if iteration == 0 and store.info(0, "augment"):  # a baseline's examples are in D_0
        info = store.info(0, "augment")
        rejected.update(info.get("rejected_by_reason") or {})
        asked += info.get("requests", 0)
    return rejected, asked


def _teachers(config: Config, rows: list[dict[str, Any]]) -> str:
    """The teachers as the rows name them (what actually wrote them), else as configured."""
    names = sorted({row["teacher"] for row in rows if row.get("teacher")})
    return ", ".join(f"`{name}`" for name in names) if names else f"`{config.teacher.model}`"


def teacher_terms(config: Config, rows: list[dict[str, Any]]) -> str:
    """One line on whose terms govern the teacher's output: not legal advice, a pointer to what to read."""
    teacher = config.teacher
    if teacher.type == "local" and teacher.model in BUNDLED:
        licence = BUNDLED[teacher.model].note.split("(")[1].split(",")[0]
        return (f"The added rows were written by {teacher.model}, a bundled model under the {licence} license. "
                "The seed rows are yours: their license is yours to state.")
    provider = "OpenAI's" if teacher.type == "openai" and not teacher.base_url else "the teacher model's license or its provider's"
    return (f"The added rows were written by {_teachers(config, rows)}; {provider} terms of use govern what its output may be used "
            "for (some forbid training models that compete with theirs): read them before you publish or train on this "
            "data. The seed rows are yours: their license is yours to state.")


# ── in place, and on the Hub ────────────────────────────────────────────────────────────────────
def _swap_into_place(work: Path, out: Path) -> None:
    """Replace out with work: renames only, so out is either the old export or the new one, never a mix."""
    old = out.with_name(f"{out.name}.old-{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(work, out)
    shutil.rmtree(old, ignore_errors=True)


def hub_token(repo: str) -> str:
    """The Hugging Face token for --push-to-hub; ExportError when there is none or the Hub is switched off."""
    from huggingface_hub import get_token

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise ExportError(f"--push-to-hub {repo}: HF_HUB_OFFLINE is set, so the Hugging Face Hub is not contacted; unset "
                          "it, or export without --push-to-hub")
    token = get_token()
    if not token:
        raise ExportError(f"--push-to-hub {repo}: no Hugging Face token is configured; run `hf auth login` or set HF_TOKEN, "
                          "or export without --push-to-hub")
    return token


def push(out: Path, repo: str, token: str, with_student: bool) -> list[str]:
    """Upload dataset/ to the dataset repo `repo` and student/ to the model repo `repo`; return their URLs."""
    from huggingface_hub import HfApi

    # HF_ENDPOINT read now, not when huggingface_hub was imported: a mirror set for this command is honoured.
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token)
    parts = [("dataset", out / "dataset")] + ([("model", out / "student")] if with_student else [])
    urls = []
    try:
        for kind, folder in parts:
            url = api.create_repo(repo, repo_type=kind, private=True, exist_ok=True)
            api.upload_folder(folder_path=str(folder), repo_id=repo, repo_type=kind, commit_message="llm2llm export")
            urls.append(str(url))
    except Exception as exc:  # network, auth, permissions: each is one line for the user, not a traceback
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ExportError(f"--push-to-hub {repo}: the Hugging Face Hub refused or could not be reached ({type(exc).__name__}: "
                          f"{reason}); the export itself is complete in {out}, run again to retry the upload") from None
    return urls

