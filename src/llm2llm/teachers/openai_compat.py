"""Teachers behind the OpenAI chat-completions API: any compatible endpoint, or a local GGUF we serve ourselves.

The API key is read from the environment variable named by `teacher.api_key_env` when the client is made and
is never written to disk, logs or error messages.

Requests go through the SDK's async client, so `generate` keeps `teacher.max_concurrency` of them in flight on
one event loop. Retries are ours, not the SDK's (its client is made with max_retries=0), so that every reply can say how many it
took: connection errors, timeouts, 429, 5xx and malformed bodies are retried with exponential backoff and full
jitter, or after the server's Retry-After; 400/401/403/404 stop the run at once, except a request refused for its
size (the prompt and max_tokens beyond the model's context), which is that request's rejection (prompt_too_long).
`check()` is the preflight: key variable, endpoint, model, in seconds and before a run writes anything.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import os
import re
import threading
from typing import Any
from urllib.parse import urlsplit

from llm2llm.config import TeacherConfig
from llm2llm.errors import ModelError, TeacherError
from llm2llm.teachers import TeacherReply, TeacherRequest, estimate_tokens, sampling_params


OPENAI_URL = "https://api.openai.com/v1"
CHECK_TIMEOUT_S = 10.0  # preflight: an endpoint that has not answered by now is reported, not waited for

# How servers say a request does not fit the model's context: OpenAI (code context_length_exceeded), vLLM ("maximum
# context length is ..."), llama.cpp (type exceed_context_size_error, "exceeds the available context size").
_TOO_LONG = re.compile(r"context_length_exceeded|exceed_context_size|context (?:length|size|window)|maximum context|"
                       r"too many tokens|prompt is too long", re.IGNORECASE)


def _is_local(base_url: str) -> bool:
    return (urlsplit(base_url).hostname or "") in ("127.0.0.1", "localhost", "::1")


class _MalformedReply(Exception):
    """HTTP 200 with a body that is not a chat completion (cut JSON, an HTML page from a proxy): worth a retry."""


def _is_transient(exc: BaseException) -> bool:
    """Failures another attempt may fix. APITimeoutError is an APIConnectionError."""
    import openai

    if isinstance(exc, (openai.APIConnectionError, openai.RateLimitError, _MalformedReply)):
        return True
    return isinstance(exc, openai.APIStatusError) and exc.status_code >= 500


def _is_too_long(exc: BaseException) -> bool:
    """The server refused this request for its size: 413, or a 400 whose body speaks of the context length."""
    import openai

    if not isinstance(exc, openai.APIStatusError) or exc.status_code not in (400, 413):
        return False
    return exc.status_code == 413 or bool(_TOO_LONG.search(f"{exc.message} {json.dumps(exc.body, default=str)}"))


def _retry_after_s(exc: BaseException | None) -> float | None:
    """Seconds the server asked us to wait (Retry-After-Ms or Retry-After in seconds), if it said."""
    response = getattr(exc, "response", None)
    if response is None:
        return None
    for header, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            seconds = float(response.headers.get(header, "")) * scale
        except ValueError:  # absent, or an HTTP date: fall back to our own backoff
            continue
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
    return None


class _RetryAfterOrBackoff:
    """tenacity wait: the server's Retry-After when it sends one, else random exponential backoff; both capped."""

    def __init__(self, initial_s: float, max_s: float) -> None:
        from tenacity import wait_random_exponential

        self.backoff = wait_random_exponential(multiplier=initial_s, max=max_s)
        self.max_s = max_s

    def __call__(self, retry_state) -> float:
        retry_after = _retry_after_s(retry_state.outcome.exception())
        return min(retry_after, self.max_s) if retry_after is not None else self.backoff(retry_state)


class OpenAITeacher:
    """Requests go through the SDK's async client (`acomplete`), one client per event loop; `generate` runs them
    concurrently on one loop. `complete` is the same request for callers without a loop."""

    def __init__(self, config: TeacherConfig, seed: int) -> None:
        self.config = config
        self.seed = seed
        self.name = config.model
        self._clients: dict[asyncio.AbstractEventLoop, Any] = {}  # an async client belongs to the loop it runs on
        self._key: str | None = None  # the real key, to redact from any text we pass on
        self._connect_lock = threading.Lock()  # threads calling complete() must not each start a server

    def params(self) -> dict[str, Any]:
        return sampling_params(self.config, self.seed)

    def _endpoint(self) -> tuple[str, str]:
        """(base_url, model name the server expects)."""
        return self.config.base_url or OPENAI_URL, self.config.model

    def _client(self):
        loop = asyncio.get_running_loop()
        with self._connect_lock:
            if loop not in self._clients:
                self._clients[loop] = self._make_client()
            return self._clients[loop]

    def _make_client(self):
        try:
            from openai import AsyncOpenAI
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
        else:
            self._key = key
        # max_retries=0: acomplete() retries itself, so that it can count the retries and cap the waits.
        return AsyncOpenAI(base_url=base_url, api_key=key, timeout=self.config.timeout_s, max_retries=0)

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def _reason(self, exc: BaseException) -> str:
        """One short line for reply.error; servers may echo the key, so it is redacted."""
        import openai

        if isinstance(exc, openai.APIStatusError):
            detail = f"HTTP {exc.status_code} ({type(exc).__name__}: {getattr(exc, 'message', exc)})"
        elif isinstance(exc, _MalformedReply):
            detail = f"malformed reply ({exc})"
        elif isinstance(exc, openai.APIConnectionError) and exc.__cause__ is not None:  # the SDK's own text says little
            detail = f"{type(exc).__name__}: {exc.__cause__}"
        else:
            detail = f"{type(exc).__name__}: {exc}"
        return self._redact(detail)[:200]

    async def _create(self, client, model: str, request: TeacherRequest, params: dict[str, Any], seed: int):
        """One attempt; raises _MalformedReply for a body that is not a chat completion."""
        import openai

        try:
            response = await client.chat.completions.create(
                model=model,
                messages=request.messages,
                temperature=params["temperature"],
                top_p=params["top_p"],
                max_tokens=params["max_tokens"],
                seed=seed % (2**31),
            )
        except (json.JSONDecodeError, openai.APIResponseValidationError) as exc:
            raise _MalformedReply(f"{type(exc).__name__}: {exc}") from None
        if isinstance(response, str):  # the SDK hands back the raw text when the content type is not JSON
            raise _MalformedReply(f"not JSON: {response[:60]!r}")
        choices = getattr(response, "choices", None)
        if not choices or getattr(choices[0], "message", None) is None:  # a proxy's or overloaded server's empty body
            raise _MalformedReply("a reply without choices")
        return response

    def complete(self, request: TeacherRequest, seed: int) -> TeacherReply:
        async def once() -> TeacherReply:
            try:
                return await self.acomplete(request, seed)
            finally:
                await self.aclose()

        return asyncio.run(once())

    async def acomplete(self, request: TeacherRequest, seed: int) -> TeacherReply:
        import openai
        from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

        with self._connect_lock:
            base_url, model = self._endpoint()
        client = self._client()
        params = request.sampling(self.params())
        retrying = AsyncRetrying(
            retry=retry_if_exception(_is_transient),
            stop=stop_after_attempt(self.config.max_retries + 1),
            wait=_RetryAfterOrBackoff(self.config.retry_wait_s, self.config.retry_max_wait_s),
            reraise=True,
        )
        attempts = 0
        try:
            async for attempt in retrying:
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    response = await self._create(client, model, request, params, seed)
        except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError, openai.BadRequestError) as exc:
            if _is_too_long(exc):  # this one request does not fit the model's context; the others may
                return TeacherReply(text="", error=self._reason(exc), too_long=True, retries=attempts - 1)
            # Retrying cannot fix these: stop the run and say where.
            detail = self._redact(str(getattr(exc, "message", exc)))[:300]
            raise TeacherError(
                f"teacher endpoint {base_url} refused model {model!r}: HTTP {exc.status_code} ({detail})"
            ) from None
        except (openai.APIError, _MalformedReply) as exc:
            # Transient failures that outlived their retries, or other statuses (409, 413, 422, ...) sent once.
            plural = "s" if attempts != 1 else ""
            return TeacherReply(text="", error=f"{self._reason(exc)} from {base_url} after {attempts} attempt{plural}",
                                retries=attempts - 1, too_long=_is_too_long(exc))
        retries = attempts - 1
        choice = response.choices[0]
        text = choice.message.content or ""
        usage = getattr(response, "usage", None)
        prompt_tokens = getattr(usage, "prompt_tokens", None)
        completion_tokens = getattr(usage, "completion_tokens", None)
        estimated = prompt_tokens is None or completion_tokens is None
        if estimated:  # some servers send no usage; the run's token totals should still mean something
            prompt_tokens = estimate_tokens(sum(len(str(m.get("content") or "")) for m in request.messages))
            completion_tokens = estimate_tokens(len(text))
        details = getattr(usage, "prompt_tokens_details", None)
        return TeacherReply(
            text=text,
            finish_reason=choice.finish_reason,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            retries=retries,
            tokens_estimated=estimated,
            cached_prompt_tokens=getattr(details, "cached_tokens", None) or 0,
        )

    def check(self, key: str = "teacher") -> None:
        """Preflight, in seconds: the key's variable is set, the endpoint answers, and it serves the model (in its
        models list, or one request of one token when the list does not name it). TeacherError names what to fix."""
        import openai

        base_url, model, variable = self.config.base_url or OPENAI_URL, self.config.model, self.config.api_key_env
        api_key = os.environ.get(variable)
        if not api_key and not _is_local(base_url):
            raise TeacherError(f"{key}.api_key_env: the environment variable {variable} is not set; export your API key "
                               f"for {base_url} there, or set {key}.api_key_env to the variable that holds it")
        self._key = api_key or None
        client = openai.OpenAI(base_url=base_url, api_key=api_key or "not-needed", max_retries=0,
                               timeout=min(self.config.timeout_s, CHECK_TIMEOUT_S))

        def refused(exc: BaseException, unserved: str = "") -> TeacherError:
            """The error that names what to fix: the URL, the key's variable, or (`unserved`) the model."""
            if isinstance(exc, openai.APIConnectionError):
                return TeacherError(f"{key}.base_url: cannot reach {base_url} ({self._reason(exc)}); start the server, "
                                    f"or fix {key}.base_url")
            if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
                return TeacherError(f"{key}.api_key_env: {base_url} refused the key in ${variable} ({self._reason(exc)}); "
                                    "check the key and its access to the model")
            return TeacherError(f"{key}.model: {unserved} ({self._reason(exc)})")

        try:
            try:
                served = [entry.id for entry in client.models.list().data]
            except (openai.APIConnectionError, openai.AuthenticationError, openai.PermissionDeniedError) as exc:
                raise refused(exc) from None
            except (openai.APIError, json.JSONDecodeError):
                served = []  # no models list at this endpoint (some servers have none): one tiny request tells instead
            if model in served:
                return
            try:
                client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Say OK."}], max_tokens=1)
            except (openai.NotFoundError, openai.BadRequestError) as exc:
                listed = f"; it serves {', '.join(served[:8])}" if served else f"; is {key}.base_url right (most end in /v1)?"
                raise refused(exc, f"{base_url} does not serve {model!r}{listed}") from None
            except (openai.APIConnectionError, openai.AuthenticationError, openai.PermissionDeniedError) as exc:
                raise refused(exc) from None
            except openai.APIError:
                pass  # up but busy or flaky (429, 5xx): the run's retries deal with that
        finally:
            client.close()

    async def aclose(self) -> None:
        """Close this loop's client (before its loop ends: its connections belong to that loop)."""
        with self._connect_lock:
            client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.close()

    def close(self) -> None:
        self._clients.clear()  # each loop's client was closed by aclose() before its loop ended


class LocalTeacher(OpenAITeacher):
    """A GGUF file or bundled alias served by llama.cpp (xllamacpp) on 127.0.0.1, started on first use."""

    def __init__(self, config: TeacherConfig, seed: int) -> None:
        super().__init__(config, seed)
        self._server = None
        self._in_flight = 0
        self._idle = threading.Condition()

    async def acomplete(self, request: TeacherRequest, seed: int) -> TeacherReply:
        with self._idle:
            self._in_flight += 1
        try:
            return await super().acomplete(request, seed)
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def check(self, key: str = "teacher") -> None:
        """Preflight: the GGUF is present (a bundled alias installed and verified) and xllamacpp can serve it. The
        server itself starts on the first request."""
        from llm2llm.models import resolve_gguf

        if importlib.util.find_spec("xllamacpp") is None:
            raise TeacherError(f"{key}.type=local serves the GGUF with xllamacpp, which is not installed: "
                               "pip install 'llm2llm[local]'")
        try:
            resolve_gguf(self.config.model)
        except ModelError as exc:
            raise ModelError(f"{key}.model: {exc}") from None

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
        # Requests may still be in flight on other threads (complete() called directly): stopping llama.cpp under
        # them can deadlock its shutdown (it holds the GIL while its HTTP workers wait for Python), so let them finish.
        with self._idle:
            self._idle.wait_for(lambda: self._in_flight == 0, timeout=self.config.timeout_s)
        super().close()
        if self._server is not None:
            self._server.stop()
            self._server = None
