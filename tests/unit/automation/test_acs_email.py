"""E-mail through Azure Communication Services: the real SDK, HMAC-signed, against a fake of the service."""
from __future__ import annotations

import asyncio

import pytest

from shared.automation.acs_email import AcsEmailSender, operation_id
from shared.automation.templates import Rendered
from shared.config import Settings
from shared.errors import DeliveryError
from tests.support.fake_acs_email import FakeAcsEmail

CONTENT = Rendered(subject="Offer parsed", text="Total 5,950.00 EUR", html="<p>Total <b>5,950.00 EUR</b></p>")


def sender(fake: FakeAcsEmail, **values: str) -> AcsEmailSender:
    return AcsEmailSender(Settings.model_validate({
        "AzureWebJobsStorage": "UseDevelopmentStorage=true", "EMAIL_PROVIDER": "acs",
        "ACS_EMAIL_CONNECTION_STRING": fake.connection_string, "EMAIL_FROM": "DoNotReply@intake.example",
        **values}))


def test_the_message_is_sent_signed_with_text_and_html_and_once_per_notification():
    with FakeAcsEmail() as fake:
        asyncio.run(sender(fake).send("buyer@example.com", CONTENT, key="n-1"))
        asyncio.run(sender(fake).send("buyer@example.com", CONTENT, key="n-1"))  # a resend after a crash
        [message] = fake.sent
    assert message["senderAddress"] == "DoNotReply@intake.example"
    assert message["recipients"]["to"] == [{"address": "buyer@example.com"}]
    assert message["content"] == {"subject": "Offer parsed", "plainText": "Total 5,950.00 EUR",
                                  "html": "<p>Total <b>5,950.00 EUR</b></p>"}
    assert message["operation_id"] == operation_id("n-1")


@pytest.mark.parametrize("status, transient", [(400, False), (429, True), (503, True)])
def test_errors_say_whether_a_retry_can_help(status, transient):
    with FakeAcsEmail() as fake:
        fake.script.extend([status] * 2)  # the SDK's one retry of 429 and 5xx sees the same answer
        with pytest.raises(DeliveryError) as caught:
            asyncio.run(sender(fake).send("buyer@example.com", CONTENT, key="n-2"))
        assert fake.sent == []
    assert caught.value.transient is transient


def test_a_wrong_access_key_or_missing_settings_fail_for_good():
    with FakeAcsEmail() as fake:
        wrong = fake.connection_string.replace("accesskey=", "accesskey=AAAA")
        with pytest.raises(DeliveryError) as refused:
            asyncio.run(sender(fake, ACS_EMAIL_CONNECTION_STRING=wrong).send("buyer@example.com", CONTENT))
        with pytest.raises(DeliveryError) as unconfigured:
            asyncio.run(sender(fake, ACS_EMAIL_CONNECTION_STRING="", EMAIL_FROM="").send("b@example.com", CONTENT))
    assert not refused.value.transient and refused.value.code == "email_rejected"
    assert unconfigured.value.code == "email_not_configured" and not unconfigured.value.transient


def test_an_operation_that_ends_failed_is_a_final_error_with_the_services_reason():
    with FakeAcsEmail() as fake:
        fake.bouncing.add("gone@example.com")
        with pytest.raises(DeliveryError) as caught:
            asyncio.run(sender(fake).send("gone@example.com", CONTENT, key="n-3"))
    assert caught.value.code == "email_failed" and not caught.value.transient
    assert caught.value.message == ("Azure Communication Services did not send it: The recipient is suppressed. "
                                    "(EmailDroppedAllRecipientsSuppressed)")

