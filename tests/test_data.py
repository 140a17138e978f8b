"""Loading examples: JSONL and CSV, column mapping, stable ids, errors naming file, line and field."""

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
