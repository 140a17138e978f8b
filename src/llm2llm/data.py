"""Examples with stable ids and lineage, loaded from JSONL or CSV with errors that name file, line and field.

Sources: a .jsonl/.csv path, a bundled 'demo:<file>', or a Hugging Face dataset 'hf:<dataset id>@<split>'
(e.g. 'hf:openai/gsm8k@train[:100]', subset from data.hf_subset; needs `pip install 'llm2llm[hub]'`).

Every example carries where it came from: a seed row (`source` = file:line or hf:...@split row N) or a teacher reply
(`parent_id`, `iteration`, `teacher`, `prompt_hash`), so any training row can be traced back to the seed,
iteration, teacher and prompt that produced it. Rows are joined by `id`, never by text.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import math
import os
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Literal

from pydantic import BaseModel, ConfigDict

from llm2llm.errors import DataError


class Example(BaseModel):
    """One task example. `text`/`label` are the task's input and answer; `choices` is for multiple choice."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    text: str
    label: str
    choices: list[str] | None = None
    origin: Literal["seed", "test", "teacher", "eda", "pool"]
    source: str | None = None  # file:line for rows read from disk
    parent_id: str | None = None  # the seed example a teacher example was made from
    iteration: int | None = None  # the iteration whose wrong answers produced it
    teacher: str | None = None  # teacher model name
    prompt_hash: str | None = None  # hash of the exact teacher request


_PATH_KEYS = {"seed": "data.seed_path", "test": "data.test_path", "pool": "augment.pool_path"}
# Each file has its own column names (a CSV of seeds, a JSONL test set): the key an error should point at.
_COLUMN_KEYS = {"seed": "data.{role}_field", "test": "data.test_columns.{role}", "pool": "augment.pool_columns.{role}"}


def column_key(origin: str, role: str) -> str:
    """The config key that names `origin`'s column for `role` (text, label, choices, id)."""
    return _COLUMN_KEYS.get(origin, _COLUMN_KEYS["seed"]).format(role=role)


def content_hash(*parts: Any, length: int = 12) -> str:
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:length]


def load_examples(
    path: str,
    *,
    text_field: str,
    label_field: str,
    origin: Literal["seed", "test", "pool"],
    choices_field: str | None = None,
    id_field: str | None = None,
    limit: int | None = None,
    hf_subset: str | None = None,
) -> list[Example]:
    """Read examples from a .jsonl/.csv file, a bundled 'demo:<file>' or 'hf:<dataset id>@<split>' (with
    `hf_subset` as the dataset's configuration); raise DataError naming file:line:field (or 'row N')."""
    key = _PATH_KEYS[origin]
    reader = _read_hf_rows(path, hf_subset, label_field) if path.startswith("hf:") else read_rows(path, key)
    rows = list(reader)
    if not rows:
        raise DataError(f"{path}: no examples found (the file is empty). Point {key} at a file with rows.")
    examples: list[Example] = []
    seen_ids: Counter[str] = Counter()
    for where, row in rows[:limit] if limit else rows:
        values = {}
        for role, column in (("text", text_field), ("label", label_field)):
            if column not in row:
                found = ", ".join(sorted(row)) or "none"
                raise DataError(
                    f"{where}: missing field {column!r} (fields found: {found}). "
                    f"Set {column_key(origin, role)} to the column of this file that holds the {role}."
                )
            value = row[column]
            if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
                raise DataError(f"{where}: field {column!r} must be a string or number, got {json.dumps(value)[:60]}")
            # NaN (JSON's NaN, a pandas export's 'nan') would otherwise become a class or a text named "nan".
            if isinstance(value, float) and not math.isfinite(value) or str(value).strip().lower() == "nan":
                raise DataError(f"{where}: field {column!r} is {value!r}, a missing value; fill it in or drop the row")
            values[role] = str(value).strip()
            if not values[role]:
                raise DataError(f"{where}: field {column!r} is empty; fill it in or drop the row")
        if choices_field is not None:
            choices = row.get(choices_field)
            if not isinstance(choices, list) or not all(isinstance(c, str) and c.strip() for c in choices):
                raise DataError(
                    f"{where}: field {choices_field!r} must be a list of non-empty strings (data.choices_field), "
                    f"got {json.dumps(choices)[:60]}"
                )
            values["choices"] = [c.strip() for c in choices]
        if id_field is not None:
            if id_field not in row:
                raise DataError(f"{where}: missing id field {id_field!r} (set data.id_field: null to derive ids)")
            example_id = str(row[id_field])
        else:
            # Content-derived ids survive reordering and edits to other rows; repeats get a counter.
            example_id = f"{origin}-{content_hash(*values.values())}"
        seen_ids[example_id] += 1
        if seen_ids[example_id] > 1:
            if id_field is not None:
                raise DataError(f"{where}: duplicate id {example_id!r} in field {id_field!r}")
            example_id = f"{example_id}-{seen_ids[example_id]}"
        examples.append(Example(id=example_id, origin=origin, source=where, **values))
    return examples


def read_rows(path: str, key: str) -> Iterable[tuple[str, dict[str, Any]]]:
    """Yield ('file:line', row) pairs of a .jsonl/.csv file as they are, labelled or not (`llm2llm predict` reads
    unlabelled rows); `key` is what named the file (a config key, INPUT), for the messages."""
    if path.startswith("demo:"):
        name = path.removeprefix("demo:")
        resource = resources.files("llm2llm") / "demo_data" / name
        if not resource.is_file():
            raise DataError(f"{path}: no bundled demo file {name!r} (bundled: seeds.jsonl, test.jsonl)")
        text, display = resource.read_text(encoding="utf-8"), path
        yield from _parse_jsonl(text.splitlines(), display)
        return
    file = Path(path)
    if file.is_dir():
        raise DataError(f"{path}: is a directory, not a data file; point {key} at a .jsonl or .csv file")
    if not file.exists():
        raise DataError(f"{path}: file not found; check {key}")
    suffix = file.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".json", ".ndjson"):
        raise DataError(f"{path}: unsupported file type {file.suffix!r}; use .jsonl or .csv")
    text = _read_text(file, key)
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if None in row:  # DictReader files values beyond the header under the key None
                raise DataError(f"{where}: {len(row[None])} more value(s) than the header has columns "
                                f"({', '.join(reader.fieldnames or [])}); quote fields that contain commas")
            if None in row.values():
                raise DataError(f"{where}: fewer values than the header has columns ({', '.join(reader.fieldnames or [])})")
            yield where, dict(row)
    else:
        # split("\n"), not splitlines(): U+2028 and friends may sit inside a JSON string and are not line breaks here.
        yield from _parse_jsonl(text.split("\n"), path)


def _read_text(file: Path, key: str) -> str:
    """The file as text: UTF-8 with or without a byte-order mark; errors name the line and say what to do."""
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise DataError(f"{file}: cannot read it ({exc.strerror}); check its permissions, or point {key} at a readable file") from None
    if raw.startswith(codecs.BOM_UTF8):  # Excel and Notepad write one; it is not part of the first field's name
        raw = raw[len(codecs.BOM_UTF8):]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{file}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}: {exc.reason}); save the file as UTF-8, "
            f"e.g. iconv -f latin1 -t utf-8 {file.name} > {file.stem}.utf8{file.suffix}"
        ) from None


def _read_hf_rows(path: str, subset: str | None, label_field: str | None) -> Iterable[tuple[str, dict[str, Any]]]:
    """Yield ('hf:<id>@<split> row N', row) pairs from `datasets.load_dataset`, ClassLabel ints as their names."""
    dataset_id, _, split = path.removeprefix("hf:").rpartition("@")
    if not dataset_id or not split:
        raise DataError(
            f"{path}: write Hugging Face sources as 'hf:<dataset id>@<split>', "
            "e.g. 'hf:openai/gsm8k@train' or 'hf:openai/gsm8k@test[:200]' (subset from data.hf_subset)"
        )
    try:
        import datasets
    except ImportError:
        raise DataError(f"{path}: Hugging Face sources need the datasets library: pip install 'llm2llm[hub]'") from None
    try:
        dataset = datasets.load_dataset(dataset_id, subset, split=split)
    except Exception as exc:  # not found, offline, bad split or subset: all surface as one actionable line
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".!")
        hint = (
            "The first download needs network access (and HF_DATASETS_OFFLINE unset); later runs use the cache."
            if isinstance(exc, ConnectionError)
            else "Check the dataset id, the split and data.hf_subset."
        )
        raise DataError(
            f"{path}: could not load dataset {dataset_id!r} (subset {subset!r}, split {split!r}): {reason}. {hint}"
        ) from None
    label_names = dataset.features.get(label_field) if label_field else None
    for number, row in enumerate(dataset, start=1):
        where = f"{path} row {number}"
        if isinstance(label_names, datasets.ClassLabel) and isinstance(row.get(label_field), int):
            if not 0 <= row[label_field] < label_names.num_classes:
                # GLUE-style test splits hide their labels as -1.
                raise DataError(
                    f"{where}: field {label_field!r} is {row[label_field]}, not one of {label_names.names} "
                    "(an unlabeled split?). Use a split that has labels."
                )
            row[label_field] = label_names.int2str(row[label_field])
        yield where, row


def _parse_jsonl(lines: Iterable[str], path: str) -> Iterable[tuple[str, dict[str, Any]]]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
        yield f"{path}:{number}", row


def write_jsonl(path: Path, rows: Iterable[BaseModel | dict[str, Any]]) -> None:
    """Write atomically (tmp + rename), so a crash never leaves half a file behind."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        for row in rows:
            record = row.model_dump(mode="json", exclude_none=True) if isinstance(row, BaseModel) else row
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def read_examples(path: Path) -> list[Example]:
    return [Example.model_validate(row) for row in read_jsonl(path)]
