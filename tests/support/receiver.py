"""A webhook receiver on loopback that verifies Standard Webhooks signatures with the reference library."""
from __future__ import annotations

import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.loopback import LoopbackServer


class Receiver(LoopbackServer):
    """Answers with the scripted status codes first (e.g. [500, 500]), then 200, after `delay` seconds; keeps
    every request."""

    def __init__(self, secret: str | None = None, port: int = 0) -> None:
        self.verifier = None
        if secret:
            self.use_secret(secret)
        self.script: deque[int] = deque()
        self.attempts: list[dict] = []
        self.accepted: list[dict] = []
        self.delay = 0.0
        self._lock = threading.Lock()
        super().__init__(self._handler(), port)

    def use_secret(self, secret: str) -> None:
        """The subscription's secret, known once the subscription exists."""
        from standardwebhooks.webhooks import Webhook

        self.verifier = Webhook(secret)

    @property
    def url(self) -> str:
        return f"{self.root_url}/hook"

    def _handler(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as web servers answer: senders may reuse connections

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
                    record = {"headers": headers, "payload": payload, "verified": verified, "status": status,
                              "body": body, "at": time.perf_counter()}
                    receiver.attempts.append(record)
                    if status == 200 and verified:
                        receiver.accepted.append(record)
                time.sleep(receiver.delay)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        return Handler
