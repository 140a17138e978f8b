"""A minimal OpenAI-compatible endpoint on 127.0.0.1 for preflight tests: a models list and one-word chat replies."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class OpenAIStub:
    """Serves `models` at GET /v1/models (404 when `list_models` is False) and answers chat completions for those
    models (404 "model not found" for any other); with `key` set, anything else in the Authorization header gets 401.
    `requests` records (method, path, model) of each request."""

    def __init__(self, models: tuple[str, ...] = ("served-model",), key: str | None = None, list_models: bool = True) -> None:
        self.models, self.key, self.list_models = models, key, list_models
        self.requests: list[tuple[str, str, str | None]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stub.requests.append(("GET", self.path, None))
                if not stub.authorized(self):
                    return
                if self.path.rstrip("/") == "/v1/models" and stub.list_models:
                    stub.send(self, 200, {"object": "list", "data": [{"id": m, "object": "model"} for m in stub.models]})
                else:
                    stub.send(self, 404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                stub.requests.append(("POST", self.path, body.get("model")))
                if not stub.authorized(self):
                    return
                if body.get("model") not in stub.models:
                    stub.send(self, 404, {"error": {"message": f"model '{body.get('model')}' not found", "type": "not_found_error"}})
                    return
                stub.send(self, 200, {"id": "c", "object": "chat.completion", "created": 0, "model": body["model"],
                                      "choices": [{"index": 0, "finish_reason": "length",
                                                   "message": {"role": "assistant", "content": "OK"}}]})

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def authorized(self, handler: BaseHTTPRequestHandler) -> bool:
        if self.key is None or handler.headers.get("Authorization") == f"Bearer {self.key}":
            return True
        self.send(handler, 401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}})
        return False

    @staticmethod
    def send(handler: BaseHTTPRequestHandler, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def __enter__(self) -> OpenAIStub:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.shutdown()
        self.server.server_close()


def refused_url() -> str:
    """A 127.0.0.1 URL where nothing listens: a port the OS just handed out and took back."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
