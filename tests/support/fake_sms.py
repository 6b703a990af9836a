"""A Twilio-compatible SMS API on loopback: records form posts and their basic-auth user; scriptable failures."""
from __future__ import annotations

import base64
import threading
from collections import deque
from urllib.parse import parse_qs

from tests.support.loopback import JsonHandler, LoopbackServer


class FakeSms(LoopbackServer):
    def __init__(self) -> None:
        self.messages: list[dict] = []
        self.script: deque[int] = deque()  # statuses for the next sends, then 201
        self._lock = threading.Lock()
        super().__init__(self._handler())

    def _handler(self):
        fake = self

        class Handler(JsonHandler):
            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                form = {k: v[0] for k, v in parse_qs(raw).items()}
                user = base64.b64decode(self.headers.get("Authorization", "Basic ").split(" ", 1)[1] or b"").decode()
                with fake._lock:
                    status = fake.script.popleft() if fake.script else 201
                    fake.messages.append({"path": self.path, "form": form, "auth": user, "status": status})
                self._send(status, {"sid": "SM1", "status": "queued"} if status == 201 else {"code": 21211})

        return Handler
