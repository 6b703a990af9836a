"""Subscriptions without Azure: secrets and rotation, health after attempts, the retry schedule."""
from __future__ import annotations

import base64
import random
from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from shared.automation import subscriptions as subs
from shared.automation.events import matches, validate_pattern
from shared.errors import Unprocessable
from shared.webhooks import sign

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
GRACE = timedelta(hours=24)


def new(url: str = "https://hooks.example.com/in", events: list[str] | None = None) -> subs.Subscription:
    subscription, _ = subs.create(subs.SubscriptionIn(url=url, events=events or ["offer.*"]), NOW)
    return subscription


def test_a_new_subscription_has_one_whsec_secret_that_the_public_view_hides():
    subscription, secret = subs.create(subs.SubscriptionIn(url="https://a.example.com/x", events=["offer.parsed"]), NOW)
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 24
    assert subscription.signing_secrets(NOW) == [secret]
    assert "secrets" not in subscription.public() and secret not in str(subscription.public())


def test_rotation_signs_with_both_secrets_until_the_grace_window_ends():
    subscription = new()
    [old] = subscription.signing_secrets(NOW)
    rotated, fresh = subs.rotate(subscription, NOW, GRACE)
    assert rotated.signing_secrets(NOW + timedelta(hours=23, minutes=59)) == [fresh, old]
    assert rotated.signing_secrets(NOW + GRACE + timedelta(seconds=1)) == [fresh]


def test_rotating_twice_keeps_the_first_secret_to_its_own_deadline():
    subscription = new()
    [first] = subscription.signing_secrets(NOW)
    once, second = subs.rotate(subscription, NOW, GRACE)
    twice, third = subs.rotate(once, NOW + timedelta(hours=12), GRACE)
    assert twice.signing_secrets(NOW + timedelta(hours=13)) == [third, second, first]
    assert twice.signing_secrets(NOW + timedelta(hours=25)) == [third, second]
    assert twice.signing_secrets(NOW + timedelta(hours=37)) == [third]


def test_signatures_verify_with_the_standard_webhooks_reference_library():
    from standardwebhooks.webhooks import Webhook

    subscription = new()
    [secret] = subscription.signing_secrets(NOW)
    body = b'{"id":"evt_1","type":"offer.parsed"}'
    stamp = int(datetime.now(timezone.utc).timestamp())
    headers = {"webhook-id": "evt_1", "webhook-timestamp": str(stamp),
               "webhook-signature": sign(secret, "evt_1", stamp, body)}
    assert Webhook(secret).verify(body, headers) == {"id": "evt_1", "type": "offer.parsed"}


@pytest.mark.parametrize("url", ["http://hooks.example.com/x", "https://127.0.0.1/x", "https://localhost/x",
                                 "https://user:pw@hooks.example.com/x", "ftp://hooks.example.com/x"])
def test_targets_must_be_public_https(url):
    with pytest.raises(Unprocessable):
        subs.create(subs.SubscriptionIn(url=url, events=["offer.parsed"]), NOW)


def test_a_url_or_event_pattern_too_long_for_its_row_is_refused():
    with pytest.raises(Unprocessable):  # once a 500: the row was too large for Table storage
        subs.create(subs.SubscriptionIn(url="https://hooks.example.com/" + "a" * 2_000_000, events=["*"]), NOW)
    with pytest.raises(ValidationError, match="at most 200"):
        subs.SubscriptionIn(url="https://hooks.example.com/x", events=["custom." + "a" * 30_000] * 50)


def test_loopback_is_allowed_only_when_the_test_setting_names_it():
    subscription, _ = subs.create(subs.SubscriptionIn(url="http://127.0.0.1:9/x", events=["*"]), NOW, "127.0.0.1")
    assert subscription.url == "http://127.0.0.1:9/x"


def test_410_disables_at_once():
    after = subs.after_attempt(new(), ok=False, status_code=410, now=NOW, disable_after=timedelta(days=5))
    assert after.enabled is False and "410" in after.disabled_reason


def test_failing_for_the_configured_days_disables_and_a_success_before_that_resets_the_streak():
    days = timedelta(days=5)
    failing = subs.after_attempt(new(), ok=False, status_code=500, now=NOW, disable_after=days)
    assert failing.enabled and failing.failing_since == "2026-11-23T12:00:00Z"
    still = subs.after_attempt(failing, ok=False, status_code=None, now=NOW + timedelta(days=4), disable_after=days)
    assert still.enabled and still.failing_since == failing.failing_since
    healed = subs.after_attempt(still, ok=True, status_code=200, now=NOW + timedelta(days=4, hours=1),
                                disable_after=days)
    assert healed.failing_since is None and healed.enabled
    gone = subs.after_attempt(still, ok=False, status_code=503, now=NOW + days, disable_after=days)
    assert gone.enabled is False and "5 days" in gone.disabled_reason


def test_a_success_right_after_another_changes_nothing_so_nothing_is_written():
    first = subs.after_attempt(new(), ok=True, status_code=200, now=NOW, disable_after=timedelta(days=5))
    again = subs.after_attempt(first, ok=True, status_code=200, now=NOW + timedelta(seconds=5),
                               disable_after=timedelta(days=5))
    assert again is first


def test_the_default_schedule_is_eight_attempts_over_about_a_day():
    waits = subs.parse_schedule("5s,5m,30m,2h,5h,10h,10h")
    assert len(waits) + 1 == 8
    assert timedelta(hours=20) < timedelta(seconds=sum(waits)) < timedelta(hours=30)


@pytest.mark.parametrize("bad", ["", "5", "5x", "s5", "1h,,2h", "-5s"])
def test_a_malformed_schedule_is_refused(bad):
    with pytest.raises(ValueError):
        subs.parse_schedule(bad)


def test_waits_are_jittered_within_twenty_percent_and_end_after_the_schedule():
    schedule = [10.0, 100.0]
    rng = random.Random(7)
    waits = [subs.wait_before(1, schedule, rng) for _ in range(200)]
    assert all(8.0 <= w <= 12.0 for w in waits) and len(set(waits)) > 100
    assert subs.wait_before(3, schedule, rng) is None


def test_event_patterns_must_match_a_known_type():
    assert validate_pattern("offer.*") == "offer.*" and validate_pattern("custom.anything") == "custom.anything"
    with pytest.raises(ValueError):
        validate_pattern("offers.parsed")
    with pytest.raises(ValidationError):
        subs.SubscriptionIn(url="https://a.example.com", events=["nope"])
    assert matches(["whatsapp.*"], "whatsapp.reply.sent") and not matches(["offer.parsed"], "offer.failed")
