"""Shared constants and bounded polling for the functional tests (no fixed sleeps, clear failures)."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any, Callable

FUNCTION_KEY = "test-function-key"
MASTER_KEY = "test-master-key"
MAX_ACTIVITIES = 8
TERMINAL = {"Completed", "Failed", "Terminated", "Canceled"}


def eventually(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02,
               what: str = "the condition") -> Any:
    """Polls `check()` until it returns something truthy and returns that; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout} s waiting for {what}; last value: {value!r}")
        time.sleep(interval)


class Http:
    """A tiny HTTP client for tests: real requests to the host, JSON in and out."""

    def __init__(self, base_url: str, key: str | None = FUNCTION_KEY) -> None:
        self.base_url = base_url
        self.key = key

    def request(self, method: str, path: str, body: Any = None, *, headers: dict | None = None,
                raw: bytes | None = None) -> tuple[int, dict, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        all_headers = {"content-type": "application/json"} if raw is None else {}
        if self.key:
            all_headers["x-functions-key"] = self.key
        all_headers.update(headers or {})
        req = urllib.request.Request(self.base_url + path, data=data, method=method, headers=all_headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, resp_headers, content = resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as err:
            status, resp_headers, content = err.code, dict(err.headers), err.read()
        try:
            parsed = json.loads(content) if content else None
        except ValueError:
            parsed = content
        return status, resp_headers, parsed
