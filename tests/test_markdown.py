"""Markdown tables as a renderer reads them: report.md and compare.md parse into tables whose cells hold what was
written, `|D_i|`, pipes in labels and line breaks included (checked with markdown-it-py, not by eye)."""

from __future__ import annotations

import json

import pytest
from markdown_it import MarkdownIt

from conftest import SEED_ROWS
from llm2llm import markdown, report
from llm2llm.config import load_config
from llm2llm.loop import run

from scripted import ScriptedStudent, ScriptedTeacher

_PARSER = MarkdownIt("commonmark").enable("table")


def parse_tables(text: str) -> list[list[list[str]]]:
    """Every table in `text` as rows of cell texts (header row first), the way a markdown renderer sees them."""
    tables, row = [], None
    for token in _PARSER.parse(text):
        if token.type == "table_open":
            tables.append([])
        elif token.type == "tr_open":
            row = []
            tables[-1].append(row)
        elif token.type == "inline" and row is not None:
            row.append("".join(child.content for child in token.children if child.type in ("text", "code_inline")))
        elif token.type == "tr_close":
            row = None
    return tables


def test_cells_with_pipes_line_breaks_and_angle_brackets_stay_in_their_cell():
    text = markdown.table(["iter", "|D_i|", "note"], [[0, "a|b", "two\nlines"], [1, "<unk>", "back\\slash"]])
    [parsed] = parse_tables(text)
    assert parsed == [["iter", "|D_i|", "note"], ["0", "a|b", "two lines"], ["1", "<unk>", "back\\slash"]]


def test_a_row_of_the_wrong_width_is_refused():
    with pytest.raises(ValueError, match="2 cells for 3 headers"):
        markdown.table(["a", "b", "c"], [[1, 2]])


@pytest.fixture
def finished_run(tmp_path, data_files):
    ScriptedTeacher.calls = []
    seeds, test = data_files
    config = load_config(None, [f"data.seed_path={seeds}", f"data.test_path={test}", f"output_dir={tmp_path / 'runs'}", "name=md",
                                "teacher.type=scripted:ScriptedTeacher", "loop.iterations=2"])
    return run(config, student=ScriptedStudent({SEED_ROWS[0]["text"]}))


def test_report_md_is_one_table_with_every_column_and_says_why_the_run_stopped(finished_run):
    text = report.markdown(finished_run)
    [parsed] = parse_tables(text)
    assert parsed[0] == [header for header, _ in report.WIDE_COLUMNS]  # `|D_i|` is one header cell, not three
    assert len(parsed) == 3 and all(len(row) == len(report.WIDE_COLUMNS) for row in parsed)
    assert "Finished: completed 2 iterations." in text


def test_compare_md_parses_as_a_table(tmp_path, finished_run):
    from llm2llm.compare import HEADERS, Method, compare

    config = tmp_path / "c.yaml"
    config.write_text(json.dumps(json.loads(json.dumps(finished_run.config().model_dump(mode="json")))), encoding="utf-8")
    summary = compare(config, ["name=cmp"], [Method.parse("finetune"), Method.parse("a=finetune student.epochs=2")], 1,
                      lambda settings: run(settings, student=ScriptedStudent(set())))
    [parsed] = parse_tables((tmp_path / "runs" / "cmp" / "compare.md").read_text())
    assert parsed[0] == HEADERS and [row[0] for row in parsed[1:]] == [row["method"] for row in summary["table"]]
