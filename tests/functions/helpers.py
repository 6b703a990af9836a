"""Shared constants and bounded polling for the functional tests (no fixed sleeps, clear failures)."""
from __future__ import annotations

import time
from typing import Any, Callable

from tests.support import http as support_http

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


class Http(support_http.Http):
    """The shared test client, with this suite's function key by default."""

    def __init__(self, base_url: str, key: str | None = FUNCTION_KEY) -> None:
        super().__init__(base_url, key)
