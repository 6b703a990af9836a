"""Notification requests and the SMS and WhatsApp senders against loopback fakes (no Azure)."""
from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from shared.automation.notifications import HttpSmsSender, NotificationIn, WahaSender, recipient_key
from shared.automation.templates import Rendered
from shared.config import Settings
from shared.errors import DeliveryError
from tests.support.fake_sms import FakeSms
from tests.support.fake_waha import FakeWaha


def settings(**values: str) -> Settings:
    return Settings.model_validate({"AzureWebJobsStorage": "UseDevelopmentStorage=true", **values})


@pytest.mark.parametrize("body", [
    {"channel": "email", "to": "not-an-address", "body": "x"},
    {"channel": "email", "to": "a@example.com\r\nBcc: all@example.com", "body": "x"},
    {"channel": "sms", "to": "call me", "body": "x"},
    {"channel": "whatsapp", "to": "+49 151", "body": "x"},
    {"channel": "email", "to": "a@example.com"},
    {"channel": "email", "to": "a@example.com", "template": "t", "body": "both"},
    {"channel": "fax", "to": "+4915112345678", "body": "x"},
])
def test_bad_notification_requests_are_refused(body):
    with pytest.raises(ValidationError):
        NotificationIn.model_validate(body)


def test_recipients_are_keyed_so_that_spellings_of_one_number_share_a_budget():
    assert recipient_key("sms", "+49 151 1234-5678") == recipient_key("sms", "4915112345678")
    assert recipient_key("email", "Ana@Example.com") == recipient_key("email", "ana@example.com")


def test_sms_goes_to_the_twilio_compatible_api_with_basic_auth():
    with FakeSms() as api:
        sender = HttpSmsSender(settings(SMS_BASE_URL=api.root_url, SMS_ACCOUNT_SID="AC1", SMS_AUTH_TOKEN="tok",
                                        SMS_FROM="+15550001111"))
        asyncio.run(sender.send("+4915112345678", Rendered(text="Your offer is in")))
        [message] = api.messages
        assert message["path"] == "/2010-04-01/Accounts/AC1/Messages.json" and message["auth"] == "AC1:tok"
        assert message["form"] == {"To": "+4915112345678", "From": "+15550001111", "Body": "Your offer is in"}


@pytest.mark.parametrize("status,transient", [(400, False), (429, True), (503, True)])
def test_sms_errors_say_whether_a_retry_can_help(status, transient):
    with FakeSms() as api:
        api.script.append(status)
        sender = HttpSmsSender(settings(SMS_BASE_URL=api.root_url, SMS_ACCOUNT_SID="AC1"))
        with pytest.raises(DeliveryError) as caught:
            asyncio.run(sender.send("+4915112345678", Rendered(text="x")))
        assert caught.value.transient is transient


def test_sms_without_settings_fails_for_good():
    with pytest.raises(DeliveryError) as caught:
        asyncio.run(HttpSmsSender(settings()).send("+4915112345678", Rendered(text="x")))
    assert caught.value.code == "sms_not_configured" and not caught.value.transient


def test_whatsapp_goes_through_waha_to_the_number_as_a_chat_id():
    with FakeWaha() as waha:
        sender = WahaSender(settings(WAHA_BASE_URL=waha.base_url, WAHA_SESSION="shop"))
        asyncio.run(sender.send("+49 151 12345678", Rendered(text="Hello")))
        assert waha.sent() == [{"session": "shop", "chatId": "4915112345678@c.us", "text": "Hello"}]
