"""A fake Azure Communication Services Email on loopback: HMAC-signed send, operation polling, Operation-Id."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import uuid
from collections import deque

from tests.support.loopback import JsonHandler, LoopbackServer

ACCESS_KEY = base64.b64encode(b"fake-acs-access-key-of-32-bytes!").decode()


class FakeAcsEmail(LoopbackServer):
    def __init__(self) -> None:
        self.sent: list[dict] = []  # messages accepted, one per Operation-Id
        self.operations: dict[str, dict] = {}
        self.script: deque[int] = deque()  # statuses for the next sends (e.g. 429, 503), then 202
        self.bouncing: set[str] = set()  # addresses whose operation ends Failed
        self._lock = threading.Lock()
        super().__init__(self._handler())

    @property
    def endpoint(self) -> str:
        return self.root_url

    @property
    def connection_string(self) -> str:
        return f"endpoint={self.endpoint}/;accesskey={ACCESS_KEY}"

    def _handler(self):
        fake = self

        class Handler(JsonHandler):
            def _signed(self, body: bytes) -> bool:
                """The service's HMAC-SHA256 scheme: VERB, path and query, date;host;content hash."""
                content_hash = base64.b64encode(hashlib.sha256(body).digest()).decode()
                if self.headers.get("x-ms-content-sha256") != content_hash:
                    return False
                text = f"{self.command}\n{self.path}\n{self.headers.get('x-ms-date')};{self.headers.get('Host')};" \
                       f"{content_hash}"
                expected = base64.b64encode(hmac.new(base64.b64decode(ACCESS_KEY), text.encode(),
                                                     hashlib.sha256).digest()).decode()
                return hmac.compare_digest(self.headers.get("Authorization", ""),
                                           f"HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256"
                                           f"&Signature={expected}")

            def do_GET(self) -> None:  # noqa: N802
                if not self._signed(b""):
                    return self._send(401, {"error": {"code": "Denied", "message": "bad signature"}})
                operation_id = self.path.split("/emails/operations/")[-1].split("?")[0]
                with fake._lock:
                    operation = fake.operations.get(operation_id)
                if operation is None:
                    return self._send(404, {"error": {"code": "NotFound", "message": operation_id}})
                return self._send(200, operation, {"retry-after": "0"})

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if not self.path.startswith("/emails:send") or not self._signed(body):
                    return self._send(401, {"error": {"code": "Denied", "message": "bad signature"}})
                message = json.loads(body)
                operation_id = self.headers.get("Operation-Id") or str(uuid.uuid4())
                with fake._lock:
                    scripted = fake.script.popleft() if fake.script else None
                if scripted is not None:
                    return self._send(scripted, {"error": {"code": "Scripted", "message": f"fake {scripted}"}},
                                      {"retry-after": "0"})
                recipients = message.get("recipients", {}).get("to", [])
                if not recipients or "@" not in recipients[0].get("address", ""):
                    return self._send(400, {"error": {"code": "InvalidRecipient", "message": "bad address"}})
                with fake._lock:
                    if operation_id in fake.operations:  # the same Operation-Id sends once (409, the strict reading)
                        return self._send(409, {"error": {"code": "Conflict", "message": "Operation-Id used"}})
                    failing = recipients[0]["address"] in fake.bouncing
                    if not failing:
                        fake.sent.append({**message, "operation_id": operation_id})
                    fake.operations[operation_id] = {
                        "id": operation_id, "status": "Failed" if failing else "Succeeded",
                        "error": {"code": "EmailDroppedAllRecipientsSuppressed",
                                  "message": "The recipient is suppressed."} if failing else None}
                location = f"{fake.endpoint}/emails/operations/{operation_id}?api-version=2025-09-01"
                return self._send(202, {"id": operation_id, "status": "Running", "error": None},
                                  {"Operation-Location": location, "retry-after": "0"})

        return Handler
