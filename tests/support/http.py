"""A small JSON-over-HTTP client for tests (stdlib only, real sockets)."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any, Callable


class Http:
    def __init__(self, base_url: str, key: str | None = None) -> None:
        self.base_url = base_url
        self.key = key

    def request(self, method: str, path: str, body: Any = None, *, headers: dict | None = None,
                raw: bytes | None = None, timeout: float = 30) -> tuple[int, dict, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        all_headers = {"content-type": "application/json"} if raw is None and body is not None else {}
        if self.key:
            all_headers["x-functions-key"] = self.key
        all_headers.update(headers or {})
        req = urllib.request.Request(self.base_url + path, data=data, method=method, headers=all_headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, resp_headers, content = resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as err:
            status, resp_headers, content = err.code, dict(err.headers), err.read()
        try:
            parsed = json.loads(content) if content else None
        except ValueError:
            parsed = content
        return status, resp_headers, parsed


def wait_until(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05) -> Any:
    """Polls `check` until it returns something truthy; fails the test with the last value otherwise."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s; last value: {value!r}")
