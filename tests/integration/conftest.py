"""Azurite and devhost as real processes for the integration tests."""
from __future__ import annotations

import pytest

from tests.support.fake_openai import FakeOpenAI
from tests.support.http import Http
from tests.support.processes import FUNCTION_KEY, Azurite, DevhostProcess, free_port


@pytest.fixture()
def azurite():
    server = Azurite().start()
    yield server
    server.stop()


@pytest.fixture()
def devhost_factory(azurite):
    started: list[DevhostProcess] = []

    def make(**env: str) -> DevhostProcess:
        process = DevhostProcess(azurite.connection_string, {"DEVHOST_RPC_PORT": str(free_port()), **env})
        started.append(process)
        return process.start()

    yield make
    for process in started:
        process.stop()


@pytest.fixture()
def api(devhost_factory):
    host = devhost_factory()
    http = Http(host.base_url, FUNCTION_KEY)
    http.host = host
    return http


@pytest.fixture(scope="module")
def azurite_module():
    """One Azurite for all tests of a module that share long-lived hosts."""
    server = Azurite().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def fake():
    with FakeOpenAI() as server:
        yield server
