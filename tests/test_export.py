"""`llm2llm export` and `llm2llm predict`: the grown dataset in three formats with its lineage and card, the student as
a model folder that transformers alone opens and that reproduces the run's seed predictions, new rows labelled the
run's way, and bad input refused in one line with nothing written."""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from conftest import SEED_ROWS, TEST_ROWS, write_jsonl
from llm2llm.cli import app
from llm2llm.config import load_config
from llm2llm.data import read_examples, read_jsonl
from llm2llm.loop import run
from llm2llm.tasks import build_task

from scripted import ScriptedStudent, ScriptedTeacher

runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, [str(arg) for arg in args])
    assert "Traceback" not in result.output
    return result


def one_line(result) -> str:
    """The error as the user reads it: one line, however the terminal wrapped it."""
    return " ".join(result.output.split())


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_model_dir):
    """A finished two-iteration run of the tiny student with LoRA, evaluated greedily one prompt at a time (so a
    plain `generate` call per prompt is the same computation), every student kept."""
    root = tmp_path_factory.mktemp("export")
    seeds, test = write_jsonl(root / "seeds.jsonl", SEED_ROWS), write_jsonl(root / "test.jsonl", TEST_ROWS)
    config = load_config(None, [
        f"data.seed_path={seeds}", f"data.test_path={test}", f"student.model={tiny_model_dir}", "student.epochs=3",
        "student.batch_size=4", "student.eval_batch_size=1", "student.keep_checkpoints=all", "eval.predict=generate",
        "teacher.type=scripted:ScriptedTeacher", "teacher.samples_per_wrong=2", "loop.iterations=2",
        f"output_dir={root / 'runs'}", "name=lora"])
    ScriptedTeacher.calls = []
    return run(config)


@pytest.fixture(scope="module")
def exported(lora_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "export"
    result = invoke("export", lora_run.root, "--out", out)
    assert result.exit_code == 0, result.output
    return out


def test_the_dataset_comes_in_three_formats_with_lineage(lora_run, exported):
    import datasets

    final = read_examples(lora_run.root / "iter_001" / "train.jsonl")  # no out-of-fold estimate: the last iteration
    rows = read_jsonl(exported / "dataset" / "train.jsonl")
    assert [row["id"] for row in rows] == [e.id for e in final]
    assert set(rows[0]) == {"id", "text", "label", "origin", "source", "parent_id", "iteration", "teacher", "prompt_hash",
                            "verifier_verdict"}
    parquet = datasets.load_dataset("parquet", data_files=str(exported / "dataset" / "train.parquet"), split="train",
                                    cache_dir=str(exported.parent / "hf-cache"))
    arrow = datasets.load_from_disk(str(exported / "dataset_arrow"))
    assert parquet.to_list() == arrow.to_list() == rows
    generated = [row for row in rows if row["origin"] == "teacher"]
    assert generated and all(row["parent_id"] and row["iteration"] == 0 and row["teacher"] == "scripted-teacher"
                             and row["prompt_hash"] and row["verifier_verdict"] == "agreed" for row in generated)
    seeds = [row for row in rows if row["origin"] == "seed"]
    assert all(row["verifier_verdict"] is None and row["source"].startswith("seeds.jsonl:") for row in seeds)  # no local paths
    assert json.loads((exported / "export.json").read_text())["iteration"] == 1


def test_the_dataset_card_says_what_the_rows_are_and_how_they_were_made(lora_run, exported):
    from markdown_it import MarkdownIt

    card = (exported / "dataset" / "README.md").read_text()
    assert card.startswith("---\n") and "path: train.parquet" in card.split("---")[1]  # the Hub reads the data files from here
    tokens = MarkdownIt().enable("table").parse(card)
    cells = [token.content for token in tokens if token.type == "inline"]
    metrics = lora_run.metrics(0)
    added = sum(1 for row in read_jsonl(exported / "dataset" / "train.jsonl") if row["origin"] == "teacher")
    assert ["**all**", "9", str(added), str(9 + added)] == cells[cells.index("**all**"):cells.index("**all**") + 4]
    for reason, count in metrics["rejected_by_reason"].items():
        assert cells[cells.index(reason) + 1] == str(count)
    assert f"Teacher replies rejected ({metrics['rejected']} of {metrics['requests']})" in card
    assert "`scripted-teacher`" in card and "Blind verifier (on)" in card and "ROUGE-L ≥ 0.95" in card
    assert "Made by: `llm2llm run run_config.yaml`" in card and f"Exported by: `llm2llm export {lora_run.root} --out" in card
    assert "## Terms of use" in card and "terms of use govern what its output may be used for" in card
    assert "unlike their seed" not in card  # quality.min_seed_rouge_l is off; on, the card names it
    from llm2llm.export import dataset_card, dataset_rows
    from llm2llm.finished import chosen_iteration

    config = lora_run.config()
    config = config.model_copy(update={"quality": config.quality.model_copy(update={"min_seed_rouge_l": 0.3})})
    chosen = chosen_iteration(lora_run)
    assert "replies unlike their seed (ROUGE-L < 0.3)" in dataset_card(lora_run, config, chosen, dataset_rows(lora_run, config, chosen.iteration), None)
    assert (exported / "dataset" / "run_config.yaml").read_text() == (lora_run.root / "config.yaml").read_text()
    status = invoke("status", lora_run.root)  # the export inside the run is not taken for a run of its own
    assert status.exit_code == 0 and "compare" not in status.output


def _generate(folder, messages_list):
    """Greedy answers of the model folder, loaded and prompted with transformers alone."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    answers = []
    for messages in messages_list:
        inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.inference_mode():
            output = model.generate(**inputs)  # the folder's generation config: greedy, the task's answer length
        answers.append(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    return answers


def test_the_student_folder_opens_with_transformers_alone_and_reproduces_the_seed_predictions(lora_run, exported):
    folder = exported / "student"
    assert (folder / "config.json").is_file() and not (folder / "adapter_config.json").exists()  # LoRA merged
    assert {"tokenizer.json", "generation_config.json", "chat_template.jinja", "README.md", "llm2llm.json"} <= {p.name for p in folder.iterdir()}
    seeds = [e for e in read_examples(lora_run.root / "iter_000" / "train.jsonl") if e.origin == "seed"]
    task = build_task(lora_run.config().task, seeds)
    predicted = {row["id"]: row["output"] for row in read_jsonl(lora_run.root / "iter_001" / "seed_predictions.jsonl")}
    assert _generate(folder, [task.student_messages(seed) for seed in seeds]) == [predicted[seed.id] for seed in seeds]
    card = (folder / "README.md").read_text()
    assert "library_name: transformers" in card and "AutoModelForCausalLM.from_pretrained" in card
    assert json.dumps(task.student_messages(seeds[0])[0]["content"], ensure_ascii=False) in card  # the prompt to use


def test_adapter_export_keeps_the_lora_adapter(lora_run, tmp_path):
    result = invoke("export", lora_run.root, "--out", tmp_path / "adapter", "--adapter", "--iteration", "0")
    assert result.exit_code == 0, result.output
    folder = tmp_path / "adapter" / "student"
    assert (folder / "adapter_config.json").is_file() and not (folder / "model.safetensors").exists()
    assert not (folder / "train_log.jsonl").exists()
    seeds = [e for e in read_examples(lora_run.root / "iter_000" / "train.jsonl") if e.origin == "seed"]
    task = build_task(lora_run.config().task, seeds)
    assert len(_generate(folder, [task.student_messages(seeds[0])])) == 1  # transformers puts it on its base via peft
    assert "library_name: peft" in (folder / "README.md").read_text()
    dataset = read_jsonl(tmp_path / "adapter" / "dataset" / "train.jsonl")
    assert len(dataset) == 9 and {row["origin"] for row in dataset} == {"seed"}  # D_0: the seeds alone


def test_predict_labels_new_rows_as_the_run_did(lora_run, tmp_path):
    # Seeds as new rows, in a CSV with another column beside the text: the predictions must be the run's own.
    rows = tmp_path / "rows.csv"
    with open(rows, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["ticket", "text"])
        writer.writeheader()
        writer.writerows({"ticket": k, "text": row["text"]} for k, row in enumerate(SEED_ROWS))
    result = invoke("predict", lora_run.root, rows, "--quiet")
    assert result.exit_code == 0, result.output
    with open(tmp_path / "rows.predictions.csv", newline="", encoding="utf-8") as handle:
        predicted = list(csv.DictReader(handle))
    run_predictions = read_jsonl(lora_run.root / "iter_001" / "seed_predictions.jsonl")
    assert [row["ticket"] for row in predicted] == [str(k) for k in range(len(SEED_ROWS))]
    assert [row["output"] for row in predicted] == [row["output"] for row in run_predictions]
    assert [row["prediction"] for row in predicted] == [row["answer"] or "" for row in run_predictions]

    # JSONL in and out, the text under another name, with the scoring the run would use for labels by default.
    questions = write_jsonl(tmp_path / "questions.jsonl", [{"question": row["text"]} for row in TEST_ROWS])
    result = invoke("predict", lora_run.root, questions, "--text-field", "question", "--output", tmp_path / "out.jsonl",
                    "--batch-size", "2")
    assert result.exit_code == 0, result.output
    labelled = read_jsonl(tmp_path / "out.jsonl")
    assert [row["question"] for row in labelled] == [row["text"] for row in TEST_ROWS]
    assert all(row["prediction"] is None or row["prediction"] in ("billing", "shipping", "technical") for row in labelled)


def test_predict_refuses_a_csv_without_the_text_column(lora_run, tmp_path):
    rows = tmp_path / "rows.csv"
    rows.write_text("ticket,body\n1,My parcel is late\n", encoding="utf-8")
    result = invoke("predict", lora_run.root, rows)
    assert result.exit_code == 2
    assert f"{rows}:2: no column 'text' (columns: body, ticket)" in one_line(result) and "--text-field" in one_line(result)
    assert not (tmp_path / "rows.predictions.csv").exists()


@pytest.fixture
def scripted_run(tmp_path, data_files):
    """A finished run whose students have no weights (a scripted student)."""
    seeds, test = data_files
    config = load_config(None, [f"data.seed_path={seeds}", f"data.test_path={test}", f"output_dir={tmp_path / 'runs'}",
                                "teacher.type=scripted:ScriptedTeacher", "loop.iterations=2", "name=scripted"])
    return run(config, student=ScriptedStudent({SEED_ROWS[0]["text"]}))


def test_bad_input_exits_2_in_one_line_and_writes_nothing(scripted_run, tmp_path):
    root = scripted_run.root
    # An iteration without a student: named, with what to do; then the dataset alone exports fine.
    result = invoke("export", root)
    assert result.exit_code == 2 and f"{root / 'iter_001' / 'student'}: no student weights" in one_line(result)
    assert "no iteration has one; export the dataset alone with --no-student" in one_line(result)
    assert not (root / "export").exists() and not list(root.glob("export.*"))
    assert invoke("export", root, "--no-student").exit_code == 0 and (root / "export" / "dataset" / "README.md").is_file()

    # A foreign directory, a file that is not a directory, a compare folder: each named.
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    result = invoke("export", foreign)
    assert result.exit_code == 2 and f"{foreign} is not a run directory (no config.yaml)" in one_line(result)
    result = invoke("predict", tmp_path / "missing", tmp_path / "rows.jsonl")
    assert result.exit_code == 2 and f"{tmp_path / 'missing'}: no such directory" in one_line(result)
    result = invoke("export", tmp_path)  # holds runs/scripted: points at it
    assert result.exit_code == 2 and "not a run directory" in one_line(result)

    # An unfinished run.
    state = json.loads((root / "state.json").read_text())
    state["finished"] = False
    (root / "state.json").write_text(json.dumps(state))
    for command in (["export", root, "--no-student", "--out", tmp_path / "x"], ["predict", root, tmp_path / "rows.jsonl"]):
        result = invoke(*command)
        assert result.exit_code == 2 and f"{root}: the run has not finished" in one_line(result), result.output
        assert "llm2llm run" in one_line(result)
    assert not (tmp_path / "x").exists()

    # An output folder that holds something else is never replaced.
    state["finished"] = True
    (root / "state.json").write_text(json.dumps(state))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    result = invoke("export", root, "--no-student", "--out", tmp_path / "mine")
    assert result.exit_code == 2 and "is not an earlier export" in one_line(result)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    # An iteration that was never trained.
    result = invoke("export", root, "--no-student", "--iteration", "7")
    assert result.exit_code == 2 and "iteration 7 was not trained (trained: 0, 1)" in one_line(result)


def test_push_to_hub_needs_a_token_and_the_network(scripted_run, tmp_path, monkeypatch):
    import huggingface_hub.constants

    root = scripted_run.root
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    result = invoke("export", root, "--no-student", "--push-to-hub", "me/tickets")
    assert result.exit_code == 2 and "--push-to-hub me/tickets: no Hugging Face token is configured" in one_line(result)
    assert not (root / "export").exists()  # checked before anything was written

    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = invoke("export", root, "--no-student", "--push-to-hub", "me/tickets")
    assert result.exit_code == 2 and "HF_HUB_OFFLINE is set" in one_line(result)

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: the Hub cannot be reached
    result = invoke("export", root, "--no-student", "--push-to-hub", "me/tickets")
    assert result.exit_code == 2 and "--push-to-hub me/tickets: the Hugging Face Hub refused or could not be reached" in one_line(result)
    assert "the export itself is complete" in one_line(result) and (root / "export" / "dataset" / "train.parquet").is_file()


def test_a_failed_export_leaves_the_earlier_one_whole(scripted_run, tmp_path, monkeypatch):
    import llm2llm.export
    from llm2llm.export import export

    out = tmp_path / "exports" / "out"
    export(scripted_run.root, out, with_student=False)
    before = (out / "dataset" / "train.jsonl").read_text()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(llm2llm.export, "dataset_card", broken)
    with pytest.raises(OSError):
        export(scripted_run.root, out, iteration=0, with_student=False)
    assert (out / "dataset" / "train.jsonl").read_text() == before  # still the first export, whole
    assert [path.name for path in out.parent.iterdir()] == ["out"]  # no temporary folder left behind


def test_multiple_choice_rows_keep_their_choices(tmp_path):
    from llm2llm.data import Example, write_jsonl as write_examples
    from llm2llm.export import export
    from llm2llm.runstore import RunStore

    config = load_config(None, ["task.type=multiple_choice", "data.choices_field=choices", f"output_dir={tmp_path}", "name=mc",
                                "loop.iterations=1"])
    store = RunStore(config.run_dir)
    store.open(config)
    seeds = [Example(id=f"s{k}", text=f"Which holds? {k}", label=str(k % 2), choices=["yes", "no"], origin="seed",
                     source=f"/home/someone/data/mc.jsonl:{k + 1}") for k in range(4)]
    write_examples(store.iter_dir(0) / "train.jsonl", seeds)
    store.mark_done(0, "finetune", {"train_examples": 4})
    store.set_finished(True, "completed 1 iterations")
    manifest = export(store.root, tmp_path / "out", with_student=False)
    import datasets

    rows = datasets.load_from_disk(str(tmp_path / "out" / "dataset_arrow")).to_list()
    assert manifest["rows"] == 4 and rows[1]["choices"] == ["yes", "no"] and rows[1]["label"] == "1"
    assert rows[0]["source"] == "mc.jsonl:1"  # the file's name, not the machine's path
    assert "## Rows by label" in (tmp_path / "out" / "dataset" / "README.md").read_text()
