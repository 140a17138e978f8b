"""Loading examples: JSONL and CSV, column mapping, stable ids, errors naming file, line and field."""

import os
from pathlib import Path

import pytest

from llm2llm.data import load_examples
from llm2llm.errors import DataError

from conftest import SEED_ROWS, write_jsonl


def load(path, **kwargs):
    return load_examples(str(path), text_field=kwargs.pop("text_field", "text"), label_field=kwargs.pop("label_field", "label"), origin="seed", **kwargs)


def test_jsonl_ids_are_stable_and_carry_the_source(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", SEED_ROWS)
    first = load(path)
    reordered = load(write_jsonl(tmp_path / "r.jsonl", list(reversed(SEED_ROWS))))
    assert len(first) == len(SEED_ROWS)
    assert {e.id for e in first} == {e.id for e in reordered}  # content ids survive reordering
    assert first[1].source == f"{path}:2"
    assert first[0].origin == "seed" and first[0].parent_id is None


def test_duplicate_rows_get_distinct_ids(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [SEED_ROWS[0], SEED_ROWS[0]])
    ids = [e.id for e in load(path)]
    assert len(set(ids)) == 2 and ids[1] == ids[0] + "-2"


def test_csv_with_column_mapping(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text('sentence,intent\n"hello, world",greet\nbye,leave\n')
    examples = load(path, text_field="sentence", label_field="intent")
    assert [(e.text, e.label) for e in examples] == [("hello, world", "greet"), ("bye", "leave")]
    assert examples[1].source.endswith("s.csv:3")


def test_limit(tmp_path):
    assert len(load(write_jsonl(tmp_path / "s.jsonl", SEED_ROWS), limit=4)) == 4


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"text": "a", "label": "x"}\n{"text": "b", "label": \n', r"s\.jsonl:2: not valid JSON"),
        ('{"text": "a", "label": "x"}\n\n{"text": "b"}\n', r"s\.jsonl:3: missing field 'label' \(fields found: text\)"),
        ('{"text": "", "label": "x"}\n', r"s\.jsonl:1: field 'text' is empty"),
        ('["a", "x"]\n', r"s\.jsonl:1: expected a JSON object"),
        ('{"text": {"a": 1}, "label": "x"}\n', r"s\.jsonl:1: field 'text' must be a string"),
        ("", r"no examples found"),
    ],
)
def test_bad_files_name_file_line_and_field(tmp_path, content, message):
    path = tmp_path / "s.jsonl"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        load(path)


def test_missing_file_and_unknown_type(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load(tmp_path / "nope.jsonl")
    (tmp_path / "x.parquet").write_text("x")
    with pytest.raises(DataError, match="use .jsonl or .csv"):
        load(tmp_path / "x.parquet")


def test_bundled_demo_data():
    seeds = load_examples("demo:seeds.jsonl", text_field="text", label_field="label", origin="seed")
    test = load_examples("demo:test.jsonl", text_field="text", label_field="label", origin="test")
    assert len(seeds) == 30 and len(test) == 150
    assert {e.label for e in seeds} == {e.label for e in test}
    assert not {e.text for e in seeds} & {e.text for e in test}


def test_each_file_has_its_own_columns_and_errors_name_that_files_key(tmp_path):
    """A CSV of seeds with its own column names beside a JSONL test set with others (and a pool with a third)."""
    import csv

    from llm2llm.augment.baselines import pool_examples
    from llm2llm.config import load_config
    from llm2llm.loop import load_data

    seeds = tmp_path / "seeds.csv"
    with open(seeds, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["report", "category"])
        writer.writerows([row["text"], row["label"]] for row in SEED_ROWS)
    test = write_jsonl(tmp_path / "test.jsonl", [{"text": "Why did my bill go up?", "label": "billing"}])
    pool = write_jsonl(tmp_path / "pool.jsonl", [{"question": "The van never came", "answer": "shipping"}])
    seed_columns = [f"data.seed_path={seeds}", f"data.test_path={test}", "data.text_field=report", "data.label_field=category"]

    with pytest.raises(DataError, match=r"test\.jsonl:1: missing field 'report'.*Set data\.test_columns\.text to the column"):
        load_data(load_config(None, seed_columns))
    config = load_config(None, [*seed_columns, "data.test_columns.text=text", "data.test_columns.label=label"])
    loaded_seeds, loaded_test, _ = load_data(config)
    assert loaded_seeds[0].text == SEED_ROWS[0]["text"] and loaded_seeds[0].label == SEED_ROWS[0]["label"]
    assert [(e.text, e.label) for e in loaded_test] == [("Why did my bill go up?", "billing")]

    more = load_config(None, [*seed_columns, "data.test_columns.text=text", "data.test_columns.label=label", f"augment.pool_path={pool}",
                              "augment.method=more_data", "augment.count=1", "loop.iterations=1"])
    with pytest.raises(DataError, match=r"Set augment\.pool_columns\.text"):
        pool_examples(more, loaded_seeds, loaded_test)
    more.augment.pool_columns.text, more.augment.pool_columns.label = "question", "answer"
    assert [(e.text, e.label, e.origin) for e in pool_examples(more, loaded_seeds, loaded_test)] == [("The van never came", "shipping", "pool")]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("s.jsonl", b'{"text": "a", "label": "x"}\n{"text": "caf\xe9", "label": "y"}\n', r"s\.jsonl:2: not UTF-8 text \(byte 0xe9"),
        ("s.csv", b"text,label\nfine,x\ncaf\xe9,y\n", r"s\.csv:3: not UTF-8 text"),
        ("s.jsonl", b'{"text": "a", "label": NaN}\n', r"s\.jsonl:1: field 'label' is nan, a missing value"),
        ("s.jsonl", b'{"text": "a", "label": null}\n', r"s\.jsonl:1: field 'label' must be a string or number, got null"),
        ("s.jsonl", b'{"text": "a", "label": "  "}\n', r"s\.jsonl:1: field 'label' is empty"),
        ("s.csv", b"text,label\nhello,nan\n", r"s\.csv:2: field 'label' is 'nan', a missing value"),
        ("s.csv", b"text,label\nhello,\n", r"s\.csv:2: field 'label' is empty"),
        ("s.csv", b"text,label\nhello, world,greet\n", r"s\.csv:2: 1 more value\(s\) than the header has columns \(text, label\); quote"),
        ("s.csv", b"text,label\nhello\n", r"s\.csv:2: fewer values than the header has columns"),
    ],
    ids=["latin1-jsonl", "latin1-csv", "nan-json", "null", "blank", "nan-csv", "empty-csv", "extra-csv-values", "missing-csv-values"],
)
def test_bad_values_and_encodings_name_the_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        load(path)


@pytest.mark.parametrize("name, content, line", [
    ("s.jsonl", '\ufeff{"text": "hello", "label": "greet"}\n', 1),
    ("s.csv", "\ufefftext,label\nhello,greet\n", 2),
    ("s.jsonl", '{"text": "hello\u2028there", "label": "greet"}\r\n', 1),  # U+2028 inside a string, Windows line ends
])
def test_byte_order_marks_and_unusual_line_breaks_are_read(tmp_path, name, content, line):
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8"))
    [example] = load(path)
    assert example.text.startswith("hello") and example.label == "greet" and example.source == f"{path}:{line}"


def test_a_directory_and_an_unreadable_file_are_named(tmp_path, monkeypatch):
    (tmp_path / "d.jsonl").mkdir()
    with pytest.raises(DataError, match=r"d\.jsonl: is a directory, not a data file; point data.seed_path at"):
        load(tmp_path / "d.jsonl")
    unreadable = write_jsonl(tmp_path / "u.jsonl", SEED_ROWS)
    unreadable.chmod(0)
    if os.access(unreadable, os.R_OK):  # root reads anything: make the read fail as it does for everyone else
        def denied(self):
            raise PermissionError(13, "Permission denied", str(self))

        monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(DataError, match=r"u\.jsonl: cannot read it \(Permission denied\); check its permissions"):
        load(unreadable)
