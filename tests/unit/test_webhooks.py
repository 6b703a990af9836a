"""Standard Webhooks signing (checked by the spec's reference library) and callback target rules."""
from __future__ import annotations

import base64

import pytest
from standardwebhooks.webhooks import Webhook

from shared.errors import Unprocessable
from shared.webhooks import message_id_for, sign, signed_headers, validate_target

SECRET = "whsec_" + base64.b64encode(b"unit-test-secret").decode()


def test_signature_verifies_with_the_reference_library():
    body = b'{"type":"offer.parsed","job_id":"offer-1"}'
    headers = signed_headers([SECRET], "offer-1.offer.parsed", body)
    assert Webhook(SECRET).verify(body, headers) == {"type": "offer.parsed", "job_id": "offer-1"}


def test_a_message_id_is_the_same_for_the_same_message_and_holds_no_dot():
    first = message_id_for("offer-2026.11.a", "offer.parsed")
    assert first == message_id_for("offer-2026.11.a", "offer.parsed") and "." not in first
    assert first != message_id_for("offer-2026.11.a", "offer.failed")
    assert message_id_for("a.b", "c") != message_id_for("a", "b.c")
    body = b'{"type":"offer.parsed"}'
    assert Webhook(SECRET).verify(body, signed_headers([SECRET], first, body)) == {"type": "offer.parsed"}


@pytest.mark.parametrize("secret", ["", "whsec_", "whsec_%%%"])
def test_nothing_is_signed_with_an_empty_key(secret):
    with pytest.raises(ValueError):
        sign(secret, "m0", 1_700_000_000, b"{}")


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
                                 "https://example.com./x", "https://[2606:4700::1111]/x", "https://bücher.de/x"])
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
    # IDNA maps these to 127.0.0.1, 10.0.0.1 and localhost, which is where aiohttp would connect
    ("https://１２７.０.０.１/x", "callback_url_not_public"),
    ("https://127.0.0。1/x", "callback_url_not_public"),
    ("https://①②⑦.0.0.1/x", "callback_url_not_public"),
    ("https://１０.０.０.１/x", "callback_url_not_public"),
    ("https://１６９.２５４.１６９.２５４/x", "callback_url_not_public"),
    ("https://ｌｏｃａｌｈｏｓｔ/x", "callback_url_not_public"),
    ("https://1\u200b27.0.0.1/x", "invalid_callback_url"),
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


def test_a_local_target_is_refused_for_good_at_each_send_even_one_stored_before_the_check():
    from tests.support.receiver import Receiver

    with Receiver(SECRET) as receiver:
        port = receiver.url.split(":")[2].split("/")[0]
        for url in (receiver.url.replace("127.0.0.1", "localhost"),
                    f"https://{'１２７.０.０.１'}:{port}/"):  # stored before IDNA was checked: aiohttp goes to 127.0.0.1
            attempt = _post(url, allowed_hosts="")
            assert not attempt.ok and attempt.permanent and "callback_url" in attempt.error
        assert receiver.attempts == []
        allowed = _post(receiver.url.replace("127.0.0.1", "localhost"), allowed_hosts="localhost")
        assert allowed.ok and len(receiver.accepted) == 1


def test_a_name_that_resolves_to_loopback_is_refused_at_connect_time():
    """The check on the addresses connected to: a public-looking name whose DNS answers a private address."""
    import asyncio

    from shared.webhooks import PrivateAddress, _public_only_resolver

    async def resolve(allowed_hosts: str) -> list:
        return await _public_only_resolver(allowed_hosts).resolve("localhost", 443)

    with pytest.raises(PrivateAddress):
        asyncio.run(resolve(""))
    assert {found["host"] for found in asyncio.run(resolve("localhost"))} <= {"127.0.0.1", "::1"}
