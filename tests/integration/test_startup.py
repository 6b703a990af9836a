"""A bad setting stops the app at start with one line that names the variable."""
from __future__ import annotations

import pytest

from tests.support.processes import DevhostProcess


@pytest.mark.parametrize("name,value", [("AI_PROVIDER", "skynet"), ("JOB_WAIT_MAX_SECONDS", "forever"),
                                        ("CALLBACK_SIGNING_SECRET", ""), ("CALLBACK_SIGNING_SECRET", "whsec_c2hvcnQ="),
                                        ("APPLICATIONINSIGHTS_CONNECTION_STRING", "garbage")])
def test_bad_setting_fails_start_naming_the_variable(name, value):
    host = DevhostProcess(None, {name: value})
    with pytest.raises(RuntimeError):
        host.start(timeout=30)
    lines = [line for line in host.log().splitlines() if "failed to load" in line]
    assert len(lines) == 1 and f": {name}:" in lines[0], host.log()


@pytest.mark.parametrize("name,value,storage", [("DEVHOST_HUB_WAIT_SECONDS", "abc", None),
                                                ("DEVHOST_HUB_WAIT_SECONDS", "inf", None),
                                                ("DEVHOST_LOG_LEVEL", "verbose", None),
                                                ("AzureWebJobsStorage", "garbage", "garbage")])
def test_a_bad_devhost_setting_stops_the_start_with_one_line_naming_it(name, value, storage):
    host = DevhostProcess(storage, {name: value})
    with pytest.raises(RuntimeError):
        host.start(timeout=30)
    lines = host.log().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"devhost: {name}"), host.log()
    assert host.process.returncode == 2


def test_missing_storage_setting_fails_start_naming_it(tmp_path):
    import shutil

    from tests.support.processes import ROOT

    for name in ("function_app.py", "host.json"):
        shutil.copy(ROOT / name, tmp_path / name)
    for folder in ("functions", "shared"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    host = DevhostProcess(None, {"AzureWebJobsStorage": ""}, app_root=tmp_path)  # no settings file there
    with pytest.raises(RuntimeError):
        host.start(timeout=30)
    assert "AzureWebJobsStorage" in host.log().splitlines()[-1]


def test_azurite_moves_to_other_ports_when_one_picked_free_was_taken_meanwhile():
    import socket
    import urllib.error
    import urllib.request

    from tests.support.processes import Azurite

    azurite = Azurite()
    taken, first = socket.socket(), azurite.blob_port
    taken.bind(("127.0.0.1", first))  # bound by someone else, not listening: Azurite cannot have it
    try:
        azurite.start()
        assert azurite.blob_port != first and azurite.process.poll() is None
        with pytest.raises(urllib.error.HTTPError):  # Azurite answers (400: no account in the path)
            urllib.request.urlopen(f"http://127.0.0.1:{azurite.blob_port}/", timeout=10)
    finally:
        azurite.stop()
        taken.close()


def test_azurite_keeps_an_idle_connection_longer_than_the_sdk_pool_may_reuse_it(azurite):
    """The SDK's aiohttp pool reuses a connection idle for up to 15 s; storage must not have closed it by then,
    or the request fails with "Server disconnected" (and inserts are not retried)."""
    import http.client
    import time

    conn = http.client.HTTPConnection("127.0.0.1", azurite.table_port, timeout=10)
    conn.request("GET", "/devstoreaccount1/Tables")
    conn.getresponse().read()
    sock = conn.sock
    time.sleep(16)
    conn.request("GET", "/devstoreaccount1/Tables")
    conn.getresponse().read()
    assert conn.sock is sock  # answered on the same connection, which Azurite kept open
