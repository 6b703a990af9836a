"""Standard Webhooks signing (checked by the spec's reference library) and callback target rules."""
from __future__ import annotations

import base64

import pytest
from standardwebhooks.webhooks import Webhook

from shared.errors import Unprocessable
from shared.webhooks import sign, signed_headers, validate_target

SECRET = "whsec_" + base64.b64encode(b"unit-test-secret").decode()


def test_signature_verifies_with_the_reference_library():
    body = b'{"type":"offer.parsed","job_id":"offer-1"}'
    headers = signed_headers([SECRET], "offer-1.offer.parsed", body)
    assert Webhook(SECRET).verify(body, headers) == {"type": "offer.parsed", "job_id": "offer-1"}


def test_tampered_body_fails_verification():
    headers = signed_headers([SECRET], "m1", b'{"a":1}')
    with pytest.raises(Exception):
        Webhook(SECRET).verify(b'{"a":2}', headers)


def test_two_secrets_give_two_signatures_each_valid():
    other = "whsec_" + base64.b64encode(b"rotated-secret").decode()
    headers = signed_headers([SECRET, other], "m2", b"{}", timestamp=1_700_000_000)
    assert headers["webhook-signature"].split(" ") == [sign(SECRET, "m2", 1_700_000_000, b"{}"),
                                                       sign(other, "m2", 1_700_000_000, b"{}")]


@pytest.mark.parametrize("url", ["https://hook.eu1.make.com/abc123", "https://example.com:8443/x?y=1",
                                 "https://example.com./x", "https://[2606:4700::1111]/x"])
def test_public_https_targets_are_accepted(url):
    assert validate_target(url) == url


@pytest.mark.parametrize("url,code", [
    ("http://hook.eu1.make.com/abc", "invalid_callback_url"),
    ("ftp://example.com/x", "invalid_callback_url"),
    ("https://user:pw@example.com/x", "invalid_callback_url"),
    ("not a url", "invalid_callback_url"),
    ("https://127.0.0.1/x", "callback_url_not_public"),
    ("https://[::1]/x", "callback_url_not_public"),
    ("https://192.168.0.10/x", "callback_url_not_public"),
    ("https://169.254.169.254/latest/meta-data", "callback_url_not_public"),
    ("https://localhost/x", "callback_url_not_public"),
    ("https://printer.local/x", "callback_url_not_public"),
    ("https://intranet/x", "callback_url_not_public"),
    ("https://127.1/x", "callback_url_not_public"),
    ("https://2130706433/x", "callback_url_not_public"),
    ("https://0x7f.0.0.1/x", "callback_url_not_public"),
    ("https://[::ffff:10.0.0.1]/x", "callback_url_not_public"),
    ("https://[64:ff9b::7f00:1]/x", "callback_url_not_public"),
    ("https://[2002:c0a8:0001::1]/x", "callback_url_not_public"),
    ("https://example.com/\r\nX: y", "invalid_callback_url"),
    ("https://exa mple.com/", "invalid_callback_url"),
    ("https://%31%32%37.0.0.1/", "invalid_callback_url"),
    ("https://example.com:0/", "invalid_callback_url"),
    ("https://localhost./x", "callback_url_not_public"),
    ("https://127.0.0.1./x", "invalid_callback_url"),
    ("https://[v1.x]/", "invalid_callback_url"),
    ("https://.com/", "invalid_callback_url"),
    ("https://a..b/", "invalid_callback_url"),
    ("https://8.8.8.8./", "invalid_callback_url"),  # accepted, then refused by every send
    ("https://[2001:4860::8888]./", "invalid_callback_url"),
    ("https://example.com/" + "a" * 2100, "invalid_callback_url"),
])
def test_unsafe_targets_are_refused(url, code):
    with pytest.raises(Unprocessable) as refused:
        validate_target(url)
    assert refused.value.code == code


def test_allowed_hosts_may_be_loopback_and_plain_http():
    assert validate_target("http://127.0.0.1:9000/hook", "127.0.0.1")


def _post(url: str, allowed_hosts: str):
    import asyncio

    from shared.http_client import close_all
    from shared.webhooks import post_signed

    async def run():
        try:
            return await post_signed(url, {"n": 1}, secrets=[SECRET], message_id="evt_1", timeout=5,
                                     allowed_hosts=allowed_hosts)
        finally:
            await close_all()

    return asyncio.run(run())


def test_a_name_that_resolves_to_loopback_is_refused_for_good_at_connect_time():
    from tests.support.receiver import Receiver

    with Receiver(SECRET) as receiver:
        url = receiver.url.replace("127.0.0.1", "localhost")
        attempt = _post(url, allowed_hosts="")
        assert not attempt.ok and attempt.permanent and "private address" in attempt.error
        assert receiver.attempts == []
        allowed = _post(url, allowed_hosts="localhost")
        assert allowed.ok and len(receiver.accepted) == 1
