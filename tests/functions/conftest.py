"""Fixtures: the sample Durable app served by an in-memory devhost on an ephemeral port."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import sample_app  # noqa: E402
from helpers import FUNCTION_KEY, MASTER_KEY, MAX_ACTIVITIES, TERMINAL, Http, eventually  # noqa: E402

from devhost.host import DevHost, HostConfig, HostThread  # noqa: E402
from devhost.store import MemoryStore  # noqa: E402


@pytest.fixture()
def host():
    sample_app.calls.clear()
    sample_app.concurrency.update(active=0, peak=0)
    sample_app.timer_requests.clear()
    config = HostConfig(port=0, function_key=FUNCTION_KEY, master_key=MASTER_KEY, max_activities=MAX_ACTIVITIES)
    with HostThread(DevHost(sample_app.app, MemoryStore(), config)) as running:
        yield running


@pytest.fixture()
def http(host) -> Http:
    return Http(host.base_url)


@pytest.fixture()
def client(host):
    from azure.durable_functions import DurableOrchestrationClient

    return DurableOrchestrationClient(host.host.management.binding())


@pytest.fixture()
def rpc(host) -> Http:
    """The management API on the RPC listener, where the SDK sends its calls: no key needed."""
    return Http(f"http://127.0.0.1:{host.host.rpc_port}/durabletask", key=None)


@pytest.fixture()
def status(rpc):
    """`status(id)` -> the status JSON with history and history output, or None for an unknown instance."""

    def get(instance_id: str) -> dict | None:
        code, _, body = rpc.request("GET", f"/instances/{instance_id}?showHistory=true&showHistoryOutput=true")
        assert code in (200, 202, 404), (code, body)
        return body if code != 404 else None

    return get


@pytest.fixture()
def wait_done(status):
    """`wait_done(id)` -> the status JSON once the instance is Completed, Failed, Terminated or Canceled."""

    def wait(instance_id: str, timeout: float = 10.0) -> dict:
        return eventually(lambda: (s := status(instance_id)) and s["runtimeStatus"] in TERMINAL and s,
                          timeout, what=f"{instance_id} to finish")

    return wait


@pytest.fixture()
def start(host, client):
    """`start(name, input, instance_id=None)` starts an orchestration through the real client."""

    def run(name: str, data: Any = None, instance_id: str | None = None) -> str:
        return host.run(client.start_new(name, instance_id, data))

    return run


@pytest.fixture(scope="module")
def app_http():
    """The real function_app on an in-memory devhost, for the app's own HTTP tests."""
    import os

    os.environ.setdefault("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    import function_app

    config = HostConfig(port=0, function_key=FUNCTION_KEY, master_key=MASTER_KEY, hub="IntakeHub")
    with HostThread(DevHost(function_app.app, MemoryStore(), config)) as running:
        yield Http(running.base_url, FUNCTION_KEY)
