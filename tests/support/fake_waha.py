"""A fake WAHA on loopback: records seen, typing and send calls; sendText can be scripted to fail."""
from __future__ import annotations

import json
import threading
from collections import deque
from typing import Any, Callable

from tests.support.loopback import JsonHandler, LoopbackServer


class FakeWaha(LoopbackServer):
    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.send_script: deque[int] = deque()  # statuses for the next sendText calls, then 201
        self.files: dict[str, bytes] = {}  # path -> bytes served under /api/files/
        self.on_send: Callable[[dict], Any] | None = None  # runs with each sendText body before it is answered
        self.courtesy_status = 200  # what sendSeen, startTyping and stopTyping answer
        self._lock = threading.Lock()
        super().__init__(self._handler())

    @property
    def base_url(self) -> str:
        return self.root_url

    def sent(self, chat_id: str | None = None) -> list[dict]:
        """Texts WAHA accepted (201), oldest first."""
        with self._lock:
            return [c["body"] for c in self.calls if c["path"] == "/api/sendText" and c["status"] == 201
                    and (chat_id is None or c["body"]["chatId"] == chat_id)]

    def _handler(self):
        fake = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:  # noqa: N802
                data = fake.files.get(self.path.split("?")[0])
                with fake._lock:
                    fake.calls.append({"path": self.path, "body": {}, "status": 200 if data else 404,
                                       "api_key": self.headers.get("X-Api-Key")})
                self.send_response(200 if data else 404)
                self.send_header("Content-Length", str(len(data or b"")))
                self.end_headers()
                self.wfile.write(data or b"")

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if self.path == "/api/sendText" and fake.on_send is not None:
                    fake.on_send(body)
                with fake._lock:
                    status = fake.send_script.popleft() if self.path == "/api/sendText" and fake.send_script \
                        else (201 if self.path == "/api/sendText" else fake.courtesy_status)
                    fake.calls.append({"path": self.path, "body": body, "status": status,
                                       "api_key": self.headers.get("X-Api-Key")})
                self._send(status, {"result": status < 300} if status < 300 else {"error": "fake failure"})

        return Handler
