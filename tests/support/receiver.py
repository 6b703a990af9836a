"""A webhook receiver on loopback that verifies Standard Webhooks signatures with the reference library."""
from __future__ import annotations

import json
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    """Answers with the scripted status codes first (e.g. [500, 500]), then 200; keeps every request."""

    def __init__(self, secret: str) -> None:
        from standardwebhooks.webhooks import Webhook

        self.verifier = Webhook(secret)
        self.script: deque[int] = deque()
        self.attempts: list[dict] = []
        self.accepted: list[dict] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def __enter__(self) -> "Receiver":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    payload = receiver.verifier.verify(body, headers)
                    verified = True
                except Exception:  # noqa: BLE001 - a bad signature is a 401, recorded
                    payload, verified = json.loads(body or b"{}"), False
                with receiver._lock:
                    status = receiver.script.popleft() if receiver.script else (200 if verified else 401)
                    record = {"headers": headers, "payload": payload, "verified": verified, "status": status}
                    receiver.attempts.append(record)
                    if status == 200 and verified:
                        receiver.accepted.append(record)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        return Handler
