"""`llm2llm predict RUN_DIR INPUT`: label new rows with a finished run's student, the way the run evaluated it.

The rows come from a .jsonl or .csv file (the text in the run's data.text_field column unless --text-field names
another; multiple choice also needs its choices column). Each row is written back with `prediction` (the answer) and
either `probability` (where the run scored its known answers: the answer's share of the probability over all of
them) or `output` (the student's raw greedy reply). The output is JSONL or CSV by its suffix, written to a temporary
name and renamed, so a failure leaves no half-written file.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

from llm2llm.data import Example, read_rows
from llm2llm.errors import DataError
from llm2llm.finished import chosen_iteration, finished_run, run_task, student_dir
from llm2llm.progress import SilentUI

SUFFIXES = (".jsonl", ".csv")


def predict_file(run_dir: Path, input_path: Path, output: Path | None = None, *, iteration: int | None = None,
                 text_field: str | None = None, choices_field: str | None = None, batch_size: int | None = None,
                 ui=None) -> dict[str, Any]:
    """Predict every row of input_path; write them with their predictions to output; return what was done."""
    ui = ui or SilentUI()
    store = finished_run(run_dir)
    config = store.config()
    chosen = chosen_iteration(store, iteration)
    weights = student_dir(store, chosen.iteration)
    input_path = Path(input_path)
    output = Path(output) if output else input_path.with_name(f"{input_path.stem}.predictions{input_path.suffix}")
    if output.suffix.lower() not in SUFFIXES:
        raise DataError(f"{output}: write predictions to a .jsonl or .csv file")
    if output.resolve() == input_path.resolve():
        raise DataError(f"{output}: the output would overwrite the input; choose another file with --output")
    task = run_task(store, config)
    text_field = text_field or config.data.text_field
    choices_field = choices_field or config.data.choices_field if config.task.type == "multiple_choice" else None
    rows, examples = read_input(input_path, text_field, choices_field)

    from llm2llm.students import answer_index, build_student

    settings = config.student.model_copy(update={"eval_batch_size": batch_size} if batch_size else {})
    student = build_student(settings, config.seed)
    prompts = [task.student_messages(example) for example in examples]
    choices = [task.answer_choices(example) for example in examples]
    scored = hasattr(student, "score") and all(choices) and config.eval.predict != "generate"
    with ui.stage(f"predict {len(rows)} rows · iteration {chosen.iteration}'s student", total=len(rows)) as advance:
        if scored:
            scores = student.score(weights, prompts, choices, advance)
            for row, options, logprobs in zip(rows, choices, scores):
                best = answer_index(logprobs)
                total = sum(math.exp(value - logprobs[best]) for value in logprobs)
                row["prediction"], row["probability"] = options[best], round(1 / total, 4)
        else:
            outputs = student.predict(weights, prompts, task.max_new_tokens, advance)
            for row, text in zip(rows, outputs):
                row["prediction"], row["output"] = task.extract_answer(text), text
    _write(output, rows)
    return {"output": str(output), "rows": len(rows), "iteration": chosen.iteration, "chosen": chosen.why,
            "mode": "score" if scored else "generate"}


def read_input(path: Path, text_field: str, choices_field: str | None) -> tuple[list[dict[str, Any]], list[Example]]:
    """The rows as read, and an example per row for the task's prompt; DataError naming the file, line and column."""
    rows, examples = [], []
    for where, row in read_rows(str(path), "INPUT"):
        if text_field not in row:
            found = ", ".join(sorted(row)) or "none"
            raise DataError(f"{where}: no column {text_field!r} (columns: {found}); name the column that holds the text "
                            "with --text-field")
        text = row[text_field]
        if not isinstance(text, (str, int, float)) or isinstance(text, bool):
            raise DataError(f"{where}: column {text_field!r} must hold text, got {json.dumps(text)[:60]}")
        choices = None
        if choices_field is not None:
            choices = row.get(choices_field)
            if not isinstance(choices, list) or not all(isinstance(choice, str) for choice in choices):
                raise DataError(f"{where}: column {choices_field!r} must be a list of strings (the choices); name the "
                                "column with --choices-field")
        rows.append(row)
        examples.append(Example(id=f"row-{len(rows)}", text=str(text).strip(), label="", choices=choices, origin="test"))
    if not rows:
        raise DataError(f"{path}: no rows to predict (the file is empty)")
    return rows, examples


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            if path.suffix.lower() == ".csv":
                columns = list(dict.fromkeys(key for row in rows for key in row))  # every column, in first-seen order
                writer = csv.DictWriter(handle, fieldnames=columns)
                writer.writeheader()
                writer.writerows({key: json.dumps(value) if isinstance(value, (list, dict)) else value
                                  for key, value in row.items()} for row in rows)
            else:
                handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
