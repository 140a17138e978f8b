"""Serve a local GGUF file as an OpenAI-compatible server on 127.0.0.1 with xllamacpp."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit


class LocalServerError(RuntimeError):
    """The local model server could not be started; the message says what to do."""


class LocalServer:
    """llama.cpp's HTTP server, running in-process, bound to 127.0.0.1 only.

    `n_ctx` is the context of ONE request. llama.cpp splits its total context
    evenly across the `n_parallel` slots, so the server is given
    `n_ctx * n_parallel` and every slot ends up with `n_ctx` tokens.
    `n_threads=None` lets llama.cpp use all physical cores.
    """

    startup_timeout_s = 120.0

    def __init__(
        self,
        gguf_path: str | Path,
        *,
        n_ctx: int = 4096,
        n_parallel: int = 1,
        n_threads: int | None = None,
        port: int | None = None,
    ) -> None:
        if n_ctx < 1 or n_parallel < 1:
            raise ValueError("n_ctx and n_parallel must be >= 1")
        self.gguf_path = Path(gguf_path).expanduser().resolve()
        self.n_ctx, self.n_parallel, self.n_threads, self.port = n_ctx, n_parallel, n_threads, port
        # The alias makes /v1/models report a short, stable id instead of the full path.
        self.model_name = self.gguf_path.stem
        self.base_url = ""
        self._server = None

    def start(self) -> LocalServer:
        if self._server is not None:
            return self
        if not self.gguf_path.is_file():
            raise LocalServerError(f"GGUF file not found: {self.gguf_path}")
        try:
            import xllamacpp
        except ImportError as e:
            raise LocalServerError(
                f"serving a local GGUF needs the xllamacpp package ({e}); install with: pip install xllamacpp"
            ) from e

        params = xllamacpp.CommonParams()
        params.model.path = str(self.gguf_path)
        params.model_alias = {self.model_name}
        params.n_ctx = self.n_ctx * self.n_parallel
        params.n_parallel = self.n_parallel
        if self.n_threads is not None:
            params.cpuparams.n_threads = self.n_threads
            params.cpuparams_batch.n_threads = self.n_threads
        params.hostnames = ["127.0.0.1"]
        # Port 0 lets the OS pick a free port atomically; asking it beforehand would race.
        params.port = self.port or 0
        # Errors only: info and even warning lines (e.g. one per repeated prompt) are
        # emitted per request and would flood a generation run.
        params.verbosity = 1

        t0 = time.monotonic()
        try:
            # Blocks while the model loads; returns once the HTTP listener is bound.
            self._server = xllamacpp.Server(params)
        except Exception as e:
            port_hint = f"port {self.port} is free, " if self.port else ""
            raise LocalServerError(
                f"llama.cpp could not serve {self.gguf_path} ({e}). Check that the file is a complete "
                f"GGUF (compare its sha256), {port_hint}and that n_ctx={self.n_ctx} x "
                f"n_parallel={self.n_parallel} fits in memory; the llama.cpp log above has the cause."
            ) from e

        address = self._server.listening_address or ""
        bound_port = urlsplit(address if "://" in address else f"http://{address}").port
        if not bound_port:
            self.stop()
            raise LocalServerError(f"xllamacpp reported no listening address (got {address!r})")
        self.base_url = f"http://127.0.0.1:{bound_port}/v1"
        self._wait_ready(t0)
        return self

    def _wait_ready(self, t0: float) -> None:
        # The constructor already loaded the model, so this normally succeeds at once;
        # polling still guards against a listener that is bound but not yet serving.
        last_error: Exception | None = None
        while time.monotonic() - t0 < self.startup_timeout_s:
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=5) as resp:
                    models = json.load(resp).get("data") or []
                if models:
                    self.model_name = models[0].get("id") or self.model_name
                return
            except (urllib.error.URLError, OSError, ValueError) as e:
                last_error = e
                time.sleep(0.2)
        self.stop()
        raise LocalServerError(
            f"local server for {self.gguf_path.name} did not answer {self.base_url}/models within "
            f"{self.startup_timeout_s:.0f}s (last error: {last_error}); raise LocalServer.startup_timeout_s "
            "or check the llama.cpp log above."
        )

    def stop(self) -> None:
        # xllamacpp has no stop(): the C++ destructor ends the main loop and closes the
        # port, and dropping our only reference runs it immediately under CPython.
        self._server = None
        self.base_url = ""

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
