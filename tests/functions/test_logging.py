"""Structured logs: a job on devhost leaves records with its job id and never a secret value."""
from __future__ import annotations

import importlib
import logging

import pytest

from devhost.host import DevHost, HostConfig, HostThread
from devhost.store import MemoryStore
from shared.config import get_settings
from shared.observability import JsonFormatter, dimensions, mask_phone
from tests.support.http import Http

SECRETS = {"OPENAI_API_KEY": "sk-test-SECRET-openai-0001", "WAHA_HMAC_KEY": "waha-SECRET-hmac-0002",
           "CALLBACK_SIGNING_SECRET": "whsec_U0VDUkVULWNhbGxiYWNrLTAwMDMtc2VjcmV0IQ==",
           "AZURE_OPENAI_API_KEY": "aoai-SECRET-0004"}


@pytest.fixture()
def secret_app(monkeypatch):
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    import function_app
    import functions._bootstrap

    importlib.reload(functions._bootstrap)  # the worker's start, with these settings
    config = HostConfig(port=0, function_key="k", master_key="m", hub="IntakeHub")
    with HostThread(DevHost(function_app.app, MemoryStore(), config)) as running:
        yield Http(running.base_url, "k")
    get_settings.cache_clear()
    importlib.reload(functions._bootstrap)


def test_job_run_logs_its_job_id_and_no_secret(secret_app, caplog):
    caplog.set_level(logging.DEBUG)
    status, _, job = secret_app.request("POST", "/api/selftest?wait=10")
    assert status == 200 and job["status"] == "done"
    # Something careless logs a secret: it must come out masked all the same.
    logging.getLogger("azure.core").warning("request header api-key: %s", SECRETS["OPENAI_API_KEY"])

    ours = [r for r in caplog.records if dimensions(r).get("job_id") == job["job_id"]]
    events = {dimensions(r)["event"] for r in ours}
    assert {"job.accepted", "job.finished"} <= events
    finished = next(r for r in ours if dimensions(r)["event"] == "job.finished")
    assert dimensions(finished)["status"] == "done" and dimensions(finished)["capability"] == "selftest"
    assert dimensions(finished)["duration_ms"] >= 1000
    assert any(dimensions(r).get("event") == "activity.finished" for r in caplog.records)

    formatter = JsonFormatter()
    everything = "\n".join(formatter.format(r) for r in caplog.records)
    for value in SECRETS.values():
        assert value not in everything
    assert "request header api-key: ***" in everything


def test_phone_numbers_are_masked_but_ordinary_numbers_are_not():
    assert mask_phone("from 4915550123456@c.us") == "from 49*********56@c.us"
    assert mask_phone("call +15550100199 now") == "call +15*******99 now"
    text = "order 12345 total 1999.00 EUR on 2026-11-23, +12 000 units, v1.2.3, +49 151 12345678.5"
    assert mask_phone(text) == text


def test_the_number_inside_a_waha_message_id_is_masked():
    assert (mask_phone("message_id=false_4915550123456@c.us_3EB0C767D26A1D")
            == "message_id=false_49*********56@c.us_3EB0C767D26A1D")
    assert mask_phone("dedup=default:true_4915550123456@c.us_AAA") == "dedup=default:true_49*********56@c.us_AAA"


def test_international_numbers_written_in_groups_are_masked():
    assert mask_phone("call +49 151 55501234 today") == "call +49 *** ******34 today"
    assert mask_phone("+49-151-5550-1234") == "+49-***-****-**34"
    assert mask_phone("ring +49 (0)151 5550 1234.") == "ring +49 (*)*** **** **34."
    assert mask_phone("+7 (495) 555-01-23") == "+7 (4**) ***-**-23"
    assert mask_phone("call 0049 151 55501234 today") == "call 0049 *** ******34 today"
    assert mask_phone("+49/151/55501234") == "+49/***/******34"
    assert mask_phone("to 0049-151-5550-1234.") == "to 0049-***-****-**34."


def test_dates_paths_and_versions_that_look_like_grouped_numbers_are_left_alone():
    text = "at 00:57:35 on 2026/12/08, build 0012 3, path /v1/0049/151/x, sum 00 12 EUR, 10/2026/12/08"
    assert mask_phone(text) == text
