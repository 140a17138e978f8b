"""Hugging Face sources, 'hf:<dataset id>@<split>': rows, slices, subsets, ClassLabel names, errors as DataError.

`load_dataset` is real; it reads local folders (split names inferred from file names) so nothing touches the Hub.
"""

import json
import sys

import pytest

from llm2llm.data import load_examples
from llm2llm.errors import DataError

datasets = pytest.importorskip("datasets")


@pytest.fixture(autouse=True)
def offline_hf(tmp_path, monkeypatch):
    """Offline, with every Hugging Face cache under tmp_path (datasets reads its env vars at import, so patch both)."""
    home = tmp_path / "hf-home"
    for name, value in {"HF_HOME": home, "HF_DATASETS_CACHE": home / "datasets", "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_CACHE_HOME", str(home))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", home / "datasets")
    monkeypatch.setattr(datasets.config, "HF_MODULES_CACHE", home / "modules")
    monkeypatch.setattr(datasets.config, "DOWNLOADED_DATASETS_PATH", home / "datasets" / "downloads")
    monkeypatch.setattr(datasets.config, "EXTRACTED_DATASETS_PATH", home / "datasets" / "downloads" / "extracted")


def write_split(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.fixture
def qa_folder(tmp_path):
    folder = tmp_path / "ds"
    write_split(folder / "train.jsonl", [{"question": f"what is {n}+{n}?", "answer": str(2 * n), "qid": f"q{n}"} for n in range(3)])
    write_split(folder / "test.jsonl", [{"question": "what is 9+9?", "answer": "18", "qid": "t0"}])
    return folder


def load(path, **kwargs):
    columns = {"text_field": "question", "label_field": "answer", "origin": "seed"}
    return load_examples(path, **{**columns, **kwargs})


def test_hf_rows_carry_text_label_ids_and_row_source(qa_folder):
    examples = load(f"hf:{qa_folder}@train", id_field="qid")
    assert [(e.id, e.text, e.label) for e in examples] == [("q0", "what is 0+0?", "0"), ("q1", "what is 1+1?", "2"), ("q2", "what is 2+2?", "4")]
    assert examples[0].source == f"hf:{qa_folder}@train row 1"
    assert examples[2].source == f"hf:{qa_folder}@train row 3"
    test = load(f"hf:{qa_folder}@test", origin="test")
    assert [(e.text, e.label, e.origin) for e in test] == [("what is 9+9?", "18", "test")]


def test_hf_split_slice(qa_folder):
    examples = load(f"hf:{qa_folder}@train[:2]")
    assert [e.label for e in examples] == ["0", "2"]
    assert examples[-1].source == f"hf:{qa_folder}@train[:2] row 2"


def test_hf_subset_picks_the_configuration(tmp_path):
    folder = tmp_path / "multi"
    write_split(folder / "main" / "train.jsonl", [{"question": "main q", "answer": "1"}])
    write_split(folder / "socratic" / "train.jsonl", [{"question": "socratic q", "answer": "2"}])
    configs = "".join(f"- config_name: {name}\n  data_files:\n  - split: train\n    path: {name}/train.jsonl\n" for name in ("main", "socratic"))
    (folder / "README.md").write_text(f"---\nconfigs:\n{configs}---\n")
    assert [e.text for e in load(f"hf:{folder}@train", hf_subset="socratic")] == ["socratic q"]
    assert [e.text for e in load(f"hf:{folder}@train", hf_subset="main")] == ["main q"]


def class_label_folder(tmp_path, labels):
    features = datasets.Features({"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["negative", "positive"])})
    folder = tmp_path / "sst"
    folder.mkdir()
    sentences = [f"sentence {n}" for n in range(len(labels))]
    datasets.Dataset.from_dict({"sentence": sentences, "label": labels}, features=features).to_parquet(str(folder / "train.parquet"))
    return folder


def test_hf_class_label_ints_become_names(tmp_path):
    folder = class_label_folder(tmp_path, [0, 1, 1])
    examples = load(f"hf:{folder}@train", text_field="sentence", label_field="label")
    assert [e.label for e in examples] == ["negative", "positive", "positive"]


def test_hf_unlabeled_class_label_is_a_data_error(tmp_path):
    folder = class_label_folder(tmp_path, [1, -1])  # GLUE test splits store -1
    with pytest.raises(DataError, match=r"@train row 2: field 'label' is -1, not one of \['negative', 'positive'\]"):
        load(f"hf:{folder}@train", text_field="sentence", label_field="label")


def test_hf_missing_column_names_row_and_field(qa_folder):
    with pytest.raises(DataError, match=r"@train row 1: missing field 'sentence' \(fields found: answer, qid, question\)"):
        load(f"hf:{qa_folder}@train", text_field="sentence")


@pytest.mark.parametrize(
    "reference, subset, message",
    [
        ("{tmp}/nowhere@train", None, r"could not load dataset .*nowhere.*Couldn't find any data file.*Check the dataset id"),
        ("{ds}@validation", None, r"@validation: could not load .*Unknown split \"validation\""),
        ("{ds}@train", "main", r"subset 'main'.*BuilderConfig 'main' not found.*data\.hf_subset"),
        ("openai/gsm8k@train", "main", r"hf:openai/gsm8k@train: could not load .*Couldn't reach.*network access"),
    ],
)
def test_hf_load_failures_are_one_line_data_errors(tmp_path, qa_folder, reference, subset, message):
    with pytest.raises(DataError, match=message) as caught:
        load("hf:" + reference.format(tmp=tmp_path, ds=qa_folder), hf_subset=subset)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("reference", ["hf:openai/gsm8k", "hf:openai/gsm8k@", "hf:@train"])
def test_hf_reference_without_split_says_how_to_write_it(reference):
    with pytest.raises(DataError, match=r"write Hugging Face sources as 'hf:<dataset id>@<split>'"):
        load(reference)


def test_hf_without_datasets_installed_gives_the_install_hint(qa_folder, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` raise ImportError
    with pytest.raises(DataError, match=r"pip install 'llm2llm\[hub\]'"):
        load(f"hf:{qa_folder}@train")
