"""Webhook subscriptions: who gets which events, their signing secrets with rotation, and their health."""
from __future__ import annotations

import base64
import random
import re
import secrets as random_secrets
import uuid
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..clock import iso_utc
from ..webhooks import validate_target
from .events import MAX_PATTERN_CHARS, matches, validate_pattern

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
SUCCESS_NOTE_INTERVAL = timedelta(minutes=1)  # last_success_at is kept to the minute
JITTER = 0.2  # each wait is moved by up to ±20%, so that receivers coming back are not hit all at once


class SubscriptionIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    url: str = Field(description="https URL on a public host; redirects are not followed")
    events: list[str] = Field(min_length=1, max_length=50, description="Event types; * wildcards allowed")
    description: str = Field("", max_length=500)

    @field_validator("events")
    @classmethod
    def _known(cls, events: list[str]) -> list[str]:
        if any(len(e) > MAX_PATTERN_CHARS for e in events):
            raise ValueError(f"an event pattern has at most {MAX_PATTERN_CHARS} characters")
        return sorted({validate_pattern(e) for e in events})


class Secret(BaseModel):
    secret: str
    created_at: str
    expires_at: str | None = None


class Subscription(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    url: str
    events: list[str]
    description: str = ""
    enabled: bool = True
    disabled_reason: str | None = None
    created_at: str
    secrets: list[Secret] = Field(default_factory=list, description="Newest first")
    failing_since: str | None = None
    last_success_at: str | None = None

    def public(self) -> dict:
        """What the API shows: never a secret."""
        return self.model_dump(exclude={"secrets"})

    def signing_secrets(self, now: datetime) -> list[str]:
        """The current secret and, during a rotation's grace window, the previous one."""
        return [s.secret for s in self.secrets if s.expires_at is None or _parse(s.expires_at) > now]

    def wants(self, event_type: str) -> bool:
        return self.enabled and matches(self.events, event_type)


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def new_secret() -> str:
    return "whsec_" + base64.b64encode(random_secrets.token_bytes(24)).decode()


def create(body: SubscriptionIn, now: datetime, allowed_hosts: str = "") -> tuple[Subscription, str]:
    """The new subscription and its secret, which the caller sees this once."""
    validate_target(body.url, allowed_hosts)
    secret = new_secret()
    subscription = Subscription(id=f"sub_{uuid.uuid4().hex[:20]}", url=body.url, events=body.events,
                                description=body.description, created_at=iso_utc(now),
                                secrets=[Secret(secret=secret, created_at=iso_utc(now))])
    return subscription, secret


def rotate(subscription: Subscription, now: datetime, grace: timedelta) -> tuple[Subscription, str]:
    """A new secret signs from now on; the previous one signs too until `grace` has passed."""
    secret = new_secret()
    kept = [s.model_copy(update={"expires_at": s.expires_at or iso_utc(now + grace)})
            for s in subscription.secrets if s.expires_at is None or _parse(s.expires_at) > now]
    rotated = subscription.model_copy(update={"secrets": [Secret(secret=secret, created_at=iso_utc(now)), *kept]})
    return rotated, secret


def after_attempt(subscription: Subscription, *, ok: bool, status_code: int | None, now: datetime,
                  disable_after: timedelta) -> Subscription:
    """A success clears the failing streak; 410 Gone, or failing for `disable_after` on end, disables."""
    if ok:
        last = subscription.last_success_at
        if subscription.failing_since is None and last and now - _parse(last) < SUCCESS_NOTE_INTERVAL:
            return subscription  # nothing new worth a write on every delivery
        return subscription.model_copy(update={"failing_since": None, "last_success_at": iso_utc(now)})
    if status_code == 410:
        return subscription.model_copy(update={"enabled": False, "disabled_reason": "receiver answered 410 Gone"})
    since = subscription.failing_since or iso_utc(now)
    if now - _parse(since) >= disable_after:
        days = disable_after.total_seconds() / 86400
        return subscription.model_copy(update={
            "failing_since": since, "enabled": False,
            "disabled_reason": f"every delivery failed for {days:g} days"})
    return subscription.model_copy(update={"failing_since": since})


def parse_schedule(text: str) -> list[float]:
    """`"5s,5m,30m,2h"`: the waits before the 2nd, 3rd... attempt, in seconds."""
    waits = []
    for part in text.split(","):
        match = _DURATION.match(part)
        if not match:
            raise ValueError(f"'{part.strip()}' is not a duration like 30s, 5m, 2h or 1d")
        waits.append(float(match.group(1)) * _UNIT_SECONDS[match.group(2)])
    return waits


def wait_before(attempt: int, schedule: list[float], rng: random.Random | None = None) -> float | None:
    """The jittered wait after failed attempt number `attempt` (1-based), or None when attempts are used up."""
    if attempt > len(schedule):
        return None
    base = schedule[attempt - 1]
    return round(base * (1 + (rng or random).uniform(-JITTER, JITTER)), 3)
