"""Fixtures: the sample Durable app served by an in-memory devhost on an ephemeral port."""
from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import sample_app  # noqa: E402

from devhost.host import DevHost, HostConfig, HostThread  # noqa: E402
from devhost.store import MemoryStore  # noqa: E402

FUNCTION_KEY = "test-function-key"
MASTER_KEY = "test-master-key"


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


@pytest.fixture()
def host():
    sample_app.calls.clear()
    config = HostConfig(port=0, function_key=FUNCTION_KEY, master_key=MASTER_KEY, max_activities=8)
    with HostThread(DevHost(sample_app.app, MemoryStore(), config)) as running:
        yield running


@pytest.fixture()
def http(host) -> Http:
    return Http(host.base_url)


@pytest.fixture()
def client(host):
    from azure.durable_functions import DurableOrchestrationClient

    return DurableOrchestrationClient(host.host.management.binding())
