"""E-mail notifications through Azure Communication Services (a fake of the service, the real SDK) on devhost."""
from __future__ import annotations

import time

import pytest

from tests.support.fake_acs_email import FakeAcsEmail
from tests.support.http import Http, wait_until
from tests.support.processes import FUNCTION_KEY


@pytest.fixture()
def acs():
    with FakeAcsEmail() as server:
        yield server


def test_a_notification_goes_out_through_acs_once_even_after_a_throttled_try(devhost_factory, acs):
    host = devhost_factory(EMAIL_PROVIDER="acs", ACS_EMAIL_CONNECTION_STRING=acs.connection_string,
                           EMAIL_FROM="DoNotReply@intake.example", AI_RETRY_BASE_SECONDS="0.2")
    api = Http(host.base_url, FUNCTION_KEY)
    acs.script.extend([429, 429])  # throttled (and the SDK's one retry too): the orchestration tries again later
    status, headers, queued = api.request("POST", "/api/notifications", {
        "channel": "email", "to": "ana@example.com", "subject": "Offer {{ n }} parsed", "body": "Total {{ total }}",
        "html": "<p>Total <b>{{ total }}</b></p>", "data": {"n": 7, "total": "5,950.00 EUR"},
        "idempotency_key": "acs-1"})
    assert status == 202, queued
    sent = wait_until(lambda: (n := api.request("GET", headers["Location"])[2])["status"] == "sent" and n, timeout=30)
    assert sent["attempts"] == 2
    [message] = acs.sent
    assert message["content"] == {"subject": "Offer 7 parsed", "plainText": "Total 5,950.00 EUR",
                                  "html": "<p>Total <b>5,950.00 EUR</b></p>"}
    assert message["recipients"]["to"] == [{"address": "ana@example.com"}]
    time.sleep(0.5)
    assert len(acs.sent) == 1
