"""Teachers behind the OpenAI chat-completions API: any compatible endpoint, or a local GGUF we serve ourselves.

The API key is read from the environment variable named by `teacher.api_key_env` when the client is made and
is never written to disk, logs or error messages.
"""

from __future__ import annotations

import os
import threading
from typing import Any
from urllib.parse import urlsplit

from llm2llm.config import TeacherConfig
from llm2llm.errors import TeacherError
from llm2llm.teachers import TeacherReply, TeacherRequest, sampling_params


OPENAI_URL = "https://api.openai.com/v1"


def _is_local(base_url: str) -> bool:
    return (urlsplit(base_url).hostname or "") in ("127.0.0.1", "localhost", "::1")


class OpenAITeacher:
    def __init__(self, config: TeacherConfig, seed: int) -> None:
        self.config = config
        self.seed = seed
        self.name = config.model
        self._client = None
        self._connect_lock = threading.Lock()  # worker threads must not each start a client (or a server)

    def params(self) -> dict[str, Any]:
        return sampling_params(self.config, self.seed)

    def _endpoint(self) -> tuple[str, str]:
        """(base_url, model name the server expects)."""
        return self.config.base_url or OPENAI_URL, self.config.model

    def _connect(self):
        with self._connect_lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _make_client(self):
        try:
            from openai import OpenAI
        except ImportError:
            raise TeacherError("the openai teacher needs the openai package: pip install openai") from None
        base_url, _ = self._endpoint()
        key = os.environ.get(self.config.api_key_env)
        if not key:
            if not _is_local(base_url):
                raise TeacherError(
                    f"teacher: environment variable {self.config.api_key_env} is not set; export your API key "
                    f"there, or set teacher.api_key_env to the variable that holds it"
                )
            key = "not-needed"  # local servers accept any key
        self._key = key
        # The SDK retries connection errors, 408/409/429 and 5xx with backoff, honouring Retry-After.
        return OpenAI(base_url=base_url, api_key=key, timeout=self.config.timeout_s, max_retries=self.config.max_retries)

    def complete(self, request: TeacherRequest, seed: int) -> TeacherReply:
        import openai

        client = self._connect()
        base_url, model = self._endpoint()
        params = request.sampling(self.params())
        try:
            response = client.chat.completions.create(
                model=model,
                messages=request.messages,
                temperature=params["temperature"],
                top_p=params["top_p"],
                max_tokens=params["max_tokens"],
                seed=seed % (2**31),
            )
        except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError, openai.BadRequestError) as exc:
            # Retrying cannot fix these: stop the run and say where.
            detail = str(getattr(exc, "message", exc)).replace(self._key, "***")[:300]
            raise TeacherError(
                f"teacher endpoint {base_url} refused model {model!r}: HTTP {exc.status_code} ({detail})"
            ) from None
        except (openai.APIConnectionError, openai.APITimeoutError, openai.RateLimitError, openai.InternalServerError) as exc:
            return TeacherReply(text="", error=f"{type(exc).__name__}: {str(exc).replace(self._key, '***')[:200]}")
        except openai.APIStatusError as exc:
            return TeacherReply(text="", error=f"HTTP {exc.status_code}")
        if not response.choices:
            return TeacherReply(text="", error="reply without choices")
        choice = response.choices[0]
        usage = response.usage
        return TeacherReply(
            text=choice.message.content or "",
            finish_reason=choice.finish_reason,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
        )

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class LocalTeacher(OpenAITeacher):
    """A GGUF file or bundled alias served by llama.cpp (xllamacpp) on 127.0.0.1, started on first use."""

    def __init__(self, config: TeacherConfig, seed: int) -> None:
        super().__init__(config, seed)
        self._server = None

    def _endpoint(self) -> tuple[str, str]:
        if self._server is None:
            from llm2llm.models import resolve_gguf
            from llm2llm.teachers.local_server import LocalServer, LocalServerError

            try:
                # One slot per concurrent request, so concurrency really runs in parallel on the server.
                server = LocalServer(resolve_gguf(self.config.model), n_ctx=self.config.n_ctx, n_parallel=self.config.max_concurrency)
                self._server = server.start()
            except LocalServerError as exc:
                raise TeacherError(str(exc)) from None
        return self._server.base_url, self._server.model_name

    def close(self) -> None:
        super().close()
        if self._server is not None:
            self._server.stop()
            self._server = None
