"""Preflight: teachers, student and data checked in seconds, before the run directory is touched."""

from __future__ import annotations

import json
import time
import warnings

import pytest

from llm2llm.config import TeacherConfig, load_config
from llm2llm.data import read_examples
from llm2llm.errors import DataError, Llm2llmWarning, ModelError, TeacherError
from llm2llm.loop import load_data, run
from llm2llm.preflight import preflight
from llm2llm.teachers import build_teacher

from conftest import SEED_ROWS, TEST_ROWS, write_jsonl
from stub_server import OpenAIStub, refused_url

KEY_ENV = "LLM2LLM_PREFLIGHT_TEST_KEY"


def check(base_url: str, model: str = "served-model", key_env: str = KEY_ENV) -> None:
    build_teacher(TeacherConfig(type="openai", base_url=base_url, model=model, api_key_env=key_env), 0).check("teacher")


# ── teachers ────────────────────────────────────────────────────────────────────────────────────
def test_a_listed_model_passes_without_a_single_request(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-right")
    with OpenAIStub(key="sk-right") as stub:
        check(stub.base_url)
    assert stub.requests == [("GET", "/v1/models", None)]


def test_a_model_the_list_does_not_name_is_asked_for_once(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)  # a local endpoint needs no key
    with OpenAIStub(models=("served-model",), list_models=False) as stub:
        check(stub.base_url)  # no /models route here: one request of one token says the model is served
        assert stub.requests[-1] == ("POST", "/v1/chat/completions", "served-model")
        with pytest.raises(TeacherError, match=r"teacher\.model: .* does not serve 'typo-model'; is teacher\.base_url right"):
            check(stub.base_url, "typo-model")
    with OpenAIStub(models=("llama3", "qwen2")) as stub:
        with pytest.raises(TeacherError, match=rf"teacher\.model: {stub.base_url} does not serve 'typo-model'; it serves llama3, qwen2 \(HTTP 404"):
            check(stub.base_url, "typo-model")


def test_a_refused_key_and_an_unset_variable_name_the_variable(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-wrong")
    with OpenAIStub(key="sk-right") as stub:
        with pytest.raises(TeacherError, match=rf"teacher\.api_key_env: {stub.base_url} refused the key in \${KEY_ENV} \(HTTP 401"):
            check(stub.base_url)
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(TeacherError, match=rf"teacher\.api_key_env: the environment variable {KEY_ENV} is not set; export your "
                                           r"API key for https://api\.example\.invalid/v1 there"):
        check("https://api.example.invalid/v1")  # no network needed to say so


def test_a_refused_endpoint_fails_in_seconds_naming_the_url():
    url = refused_url()
    started = time.monotonic()
    with pytest.raises(TeacherError, match=rf"teacher\.base_url: cannot reach {url} \(APIConnectionError: .*Connection refused"):
        check(url)
    assert time.monotonic() - started < 10


def test_a_local_teacher_needs_its_gguf_and_xllamacpp(tmp_path, monkeypatch):
    missing = tmp_path / "teacher.gguf"
    with pytest.raises(ModelError, match=rf"teacher\.model: model '{missing}' is neither a bundled alias .* nor an existing \.gguf file"):
        build_teacher(TeacherConfig(type="local", model=str(missing)), 0).check("teacher")
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "xllamacpp" else real_find_spec(name, *a))
    with pytest.raises(TeacherError, match=r"quality\.verifier\.type=local serves the GGUF with xllamacpp, which is not installed"):
        build_teacher(TeacherConfig(type="local", model=str(missing)), 0).check("quality.verifier")


# ── the run: nothing written before preflight passes ───────────────────────────────────────────
@pytest.fixture
def tiny(tmp_path, data_files, tiny_model_dir):
    seeds, test = data_files
    return [f"output_dir={tmp_path / 'runs'}", "name=t", f"data.seed_path={seeds}", f"data.test_path={test}",
            f"student.model={tiny_model_dir}", "student.epochs=1", "teacher.type=scripted:ScriptedTeacher", "loop.iterations=1"]


def test_a_typo_leaves_no_run_behind_so_the_fixed_command_just_runs(tmp_path, tiny):
    with pytest.raises(ModelError, match=rf"student\.model: {tmp_path}/no-such-model is not a folder"):
        run(load_config(None, [*tiny, f"student.model={tmp_path / 'no-such-model'}"]))
    with pytest.raises(TeacherError, match=r"teacher\.base_url: cannot reach"):
        run(load_config(None, [*tiny, "loop.iterations=2", "teacher.type=openai", f"teacher.base_url={refused_url()}"]))
    assert not (tmp_path / "runs").exists()  # no frozen config to refuse the corrected one
    store = run(load_config(None, tiny))
    assert store.state()["finished"]


def test_an_unused_teacher_is_not_checked_and_a_verifier_is(tiny):
    dead = ["teacher.type=openai", f"teacher.base_url={refused_url()}"]
    config = load_config(None, [*tiny, *dead])  # one iteration: the teacher is never asked
    seeds, test, task = load_data(config)
    preflight(config, task, seeds, test)
    verifier = ["loop.iterations=2", "quality.verifier.type=openai", f"quality.verifier.base_url={refused_url()}"]
    config = load_config(None, [*tiny, *verifier])
    with pytest.raises(TeacherError, match=r"quality\.verifier\.base_url: cannot reach"):
        preflight(config, task, seeds, test)
    preflight(load_config(None, [*tiny, *verifier, "quality.verify=false"]), task, seeds, test)  # no verification, no check


# ── lengths ─────────────────────────────────────────────────────────────────────────────────────
def test_over_long_rows_are_named_with_their_token_counts(tmp_path, tiny):
    rows = SEED_ROWS[:2] + [{"text": "my parcel " * 400, "label": "shipping"}] + SEED_ROWS[2:]
    seeds_path = write_jsonl(tmp_path / "long.jsonl", rows)
    config = load_config(None, [*tiny, f"data.seed_path={seeds_path}", "student.max_length=128"])
    seeds, test, task = load_data(config)
    with pytest.raises(DataError, match=rf"1 seed row\(s\) need more than student\.max_length=128 tokens \(prompt and answer\): "
                                        rf"{seeds_path}:3 has [\d,]+ tokens\. Shorten or remove them, raise student\.max_length, "
                                        r"or set data\.truncate=true"):
        preflight(config, task, seeds, test)


def test_truncation_when_asked_cuts_the_middle_of_the_text_to_fit(tmp_path, tiny, tiny_model_dir):
    from transformers import AutoTokenizer

    from llm2llm.preflight import _needed

    long_text = "START " + "my parcel is late again " * 200 + "END"
    rows = SEED_ROWS[:2] + [{"text": long_text, "label": "shipping"}] + SEED_ROWS[2:]
    seeds_path = write_jsonl(tmp_path / "long.jsonl", rows)
    config = load_config(None, [*tiny, f"data.seed_path={seeds_path}", "student.max_length=128", "data.truncate=true"])
    seeds, test, task = load_data(config)
    with pytest.warns(Llm2llmWarning, match=rf"data\.truncate: cut the middle of the text of 1 seed row\(s\) to fit student\.max_length=128: {seeds_path}:3"):
        fitted, _ = preflight(config, task, seeds, test)
    cut = fitted[2]
    assert cut.id == seeds[2].id and cut.source == seeds[2].source  # the same example, its text shortened
    assert cut.text.startswith("START my parcel") and cut.text.endswith("late again END") and " … " in cut.text
    assert _needed(task, AutoTokenizer.from_pretrained(tiny_model_dir), cut) <= 128
    assert fitted[:2] + fitted[3:] == seeds[:2] + seeds[3:]
    store = run(config)
    assert read_examples(store.root / "iter_000" / "train.jsonl")[2].text == cut.text


def test_seeds_too_long_for_a_local_teacher_s_context_are_warned_of(tiny, smollm2_gguf):
    config = load_config(None, [*tiny, "loop.iterations=2", "teacher.type=local", f"teacher.model={smollm2_gguf}",
                                "teacher.n_ctx=256", "teacher.max_tokens=200"])
    seeds, test, task = load_data(config)
    pytest.importorskip("xllamacpp")
    with pytest.warns(Llm2llmWarning, match=r"9 seed row\(s\) make teacher requests that, with teacher\.max_tokens=200, may not "
                                            r"fit teacher\.n_ctx=256 .* \(and 4 more\)\. The teacher will refuse those"):
        preflight(config, task, seeds, test)


# ── labels ──────────────────────────────────────────────────────────────────────────────────────
def test_test_labels_the_seeds_lack_are_warned_of_once(tmp_path, tiny):
    test_path = write_jsonl(tmp_path / "t.jsonl", TEST_ROWS + [{"text": "I want to talk to sales", "label": "sales"}] * 2)
    config = load_config(None, [*tiny, f"data.test_path={test_path}", "task.labels=[billing, sales, shipping, technical]"])
    seeds, test, task = load_data(config)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        preflight(config, task, seeds, test)
    [warning] = [w for w in caught if issubclass(w.category, Llm2llmWarning)]
    assert "the test set has label(s) that no seed example has: sales (2 of 6 test rows)" in str(warning.message)
    no_warning = load_config(None, tiny)
    seeds, test, task = load_data(no_warning)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Llm2llmWarning)
        preflight(no_warning, task, seeds, test)


def test_a_more_data_pool_is_loaded_before_the_run(tmp_path, tiny):
    pool = tmp_path / "pool.jsonl"
    pool.write_text(json.dumps({"text": "a", "label": "billing"}) + "\n{oops\n")
    config = load_config(None, [*tiny, "augment.method=more_data", "augment.count=1", f"augment.pool_path={pool}"])
    seeds, test, task = load_data(config)
    with pytest.raises(DataError, match=r"pool\.jsonl:2: not valid JSON"):
        preflight(config, task, seeds, test)
