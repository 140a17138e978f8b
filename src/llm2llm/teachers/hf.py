"""An in-process Hugging Face model as teacher: no server, one request at a time, seeded sampling."""

from __future__ import annotations

import threading
from typing import Any

from llm2llm.config import TeacherConfig
from llm2llm.errors import TeacherError
from llm2llm.teachers import TeacherReply, TeacherRequest, sampling_params


class HFTeacher:
    def __init__(self, config: TeacherConfig, seed: int) -> None:
        self.config = config
        self.seed = seed
        self.name = config.model
        self._loaded = None
        # One generation at a time: torch.manual_seed is process-wide, so concurrent calls would share seeds.
        self._lock = threading.Lock()

    def params(self) -> dict[str, Any]:
        return sampling_params(self.config, self.seed)

    def check(self, key: str = "teacher") -> None:
        """Preflight: the model resolves and its tokenizer loads (the weights load on the first request)."""
        from llm2llm.models import load_tokenizer

        load_tokenizer(self.config.model, f"{key}.model")

    def _load(self):
        if self._loaded is None:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            from llm2llm.models import resolve_hf

            path = resolve_hf(self.config.model)
            try:
                tokenizer = AutoTokenizer.from_pretrained(path)
                model = AutoModelForCausalLM.from_pretrained(path).eval()
            except OSError as exc:
                raise TeacherError(f"teacher.model: cannot load {self.config.model!r} ({exc})") from None
            self._loaded = (model, tokenizer)
        return self._loaded

    def complete(self, request: TeacherRequest, seed: int) -> TeacherReply:
        with self._lock:
            return self._complete(request, seed)

    def _complete(self, request: TeacherRequest, seed: int) -> TeacherReply:
        import torch
        from transformers import GenerationConfig

        from llm2llm.students.hf import encode_prompt

        model, tokenizer = self._load()
        prompt_ids = encode_prompt(tokenizer, request.messages)
        params = request.sampling(self.params())
        sample = params["temperature"] > 0
        generation = GenerationConfig(
            do_sample=sample,
            temperature=params["temperature"] if sample else None,
            top_p=params["top_p"] if sample else None,
            max_new_tokens=params["max_tokens"],
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        torch.manual_seed(seed)
        with torch.inference_mode():
            output = model.generate(input_ids=torch.tensor([prompt_ids]), generation_config=generation)
        new_tokens = output[0, len(prompt_ids) :].tolist()
        stopped = bool(new_tokens) and new_tokens[-1] == tokenizer.eos_token_id
        return TeacherReply(
            text=tokenizer.decode(new_tokens, skip_special_tokens=True).strip(),
            finish_reason="stop" if stopped or len(new_tokens) < params["max_tokens"] else "length",
            prompt_tokens=len(prompt_ids),
            completion_tokens=len(new_tokens),
        )

    def close(self) -> None:
        self._loaded = None
