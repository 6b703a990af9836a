"""One webhook delivery attempt: send, record it, judge the subscription's health, say when to try again."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Callable, Protocol

from ..clock import iso_utc
from ..config import Settings
from ..errors import Conflict
from ..observability import log_event
from ..webhooks import post_signed
from . import subscriptions as subs
from .deliveries import AttemptRecord, Delivery, recorded


class DeliveryStore(Protocol):
    async def delivery(self, subscription_id: str, delivery_id: str) -> tuple[Delivery, str] | None: ...
    async def save_delivery(self, delivery: Delivery, etag: str) -> bool: ...
    async def change_delivery(self, subscription_id: str, delivery_id: str,
                              change: Callable[[Delivery], Delivery]) -> Delivery | None: ...
    async def subscription(self, subscription_id: str, *, fresh: bool = False) -> subs.Subscription | None: ...
    async def change_subscription(self, subscription_id: str, change: Callable[[subs.Subscription], subs.Subscription]
                                  ) -> subs.Subscription | None: ...


async def _save(store: DeliveryStore, delivery: Delivery, etag: str, change: Callable[[Delivery], Delivery]
                ) -> Delivery | None:
    """`change` applied to the delivery as read (one write when nobody changed it since), else to what is stored
    now (an attempt run again, a replay in between): no attempt record is lost and no outcome undone."""
    changed = change(delivery)
    if await store.save_delivery(changed, etag):
        return changed
    return await store.change_delivery(delivery.subscription_id, delivery.id, change)


def _final(code: str, message: str) -> dict:
    return {"ok": False, "error": {"code": code, "message": message}, "retry_in": None, "usage": []}


def _settled(delivery: Delivery, trigger: str) -> dict | None:
    """The outcome of a scheduled attempt when the delivery is settled already (by a replay, or by this attempt
    before it ran again): nothing more to send."""
    if trigger != "schedule" or delivery.status not in ("delivered", "cancelled"):
        return None
    if delivery.status == "delivered":
        return {"ok": True, "value": {"status_code": None}, "usage": []}
    return _final("cancelled", "The delivery was cancelled.")


async def note_health(store: DeliveryStore, subscription: subs.Subscription, ok: bool, status_code: int | None,
                      now: datetime, disable_after: timedelta) -> subs.Subscription:
    """The subscription after this attempt; changed in storage (safe against concurrent writers) only when its
    health changed."""
    def judged(current: subs.Subscription) -> subs.Subscription:
        return subs.after_attempt(current, ok=ok, status_code=status_code, now=now, disable_after=disable_after)

    if judged(subscription) == subscription:
        return subscription
    disabled_here = False

    def judged_noting(current: subs.Subscription) -> subs.Subscription:
        nonlocal disabled_here
        health = judged(current)
        disabled_here = current.enabled and not health.enabled
        return health

    try:
        health = await store.change_subscription(subscription.id, judged_noting)
    except Conflict:  # the delivery was made: noting its effect on health must not make it run again
        log_event("webhook.subscription.health_not_noted", logging.WARNING, subscription_id=subscription.id)
        return judged(subscription)
    if health is None:  # deleted meanwhile: it stays deleted
        return subscription.model_copy(update={"enabled": False})
    if disabled_here:
        log_event("webhook.subscription.disabled", subscription_id=health.id, reason=health.disabled_reason)
    return health


async def attempt(store: DeliveryStore, task: dict, settings: Settings, now: datetime) -> dict:
    """`task`: subscription_id, delivery_id, attempt (1, 2...), trigger (schedule or replay), and for the first
    scheduled attempt `first`: the delivery as created and its ETag, so that it is not read back.

    The outcome `call_with_retries` understands: ok, or an error with `retry_in` seconds (None: give up).
    """
    trigger = task.get("trigger", "schedule")
    first = task.get("first") if trigger == "schedule" and task.get("attempt") == 1 else None
    found = ((Delivery.model_validate(first["delivery"]), first["etag"]) if first is not None
             else await store.delivery(task["subscription_id"], task["delivery_id"]))
    if found is None:
        return _final("delivery_not_found", "The delivery record is gone.")
    delivery, etag = found
    settled = _settled(delivery, trigger)
    if settled is not None:
        return settled
    subscription = await store.subscription(task["subscription_id"])
    if subscription is None or not subscription.enabled:
        def cancel(current: Delivery) -> Delivery:
            if current.status not in ("pending", "retrying"):
                return current
            return current.model_copy(update={"status": "cancelled", "next_attempt_at": None})

        await _save(store, delivery, etag, cancel)
        return _final("subscription_inactive", "The subscription was deleted or disabled.")
    sent = await post_signed(subscription.url, delivery.event.model_dump(), secrets=subscription.signing_secrets(now),
                             message_id=delivery.event.id, timeout=settings.callback_timeout_seconds,
                             allowed_hosts=settings.callback_allowed_hosts)
    health = await note_health(store, subscription, sent.ok, sent.status_code, now,
                               timedelta(days=settings.webhook_disable_after_days))
    refused = sent.status_code is None and sent.permanent  # e.g. the name resolves to a private address
    retry_in = None if sent.ok or refused or trigger == "replay" or not health.enabled else \
        subs.wait_before(task["attempt"], subs.parse_schedule(settings.webhook_retry_schedule))

    def with_this_attempt(current: Delivery) -> Delivery:
        record = AttemptRecord(number=len(current.attempts) + 1, at=iso_utc(now), status_code=sent.status_code,
                               error=sent.error, duration_ms=round(sent.duration_ms, 1), trigger=trigger)
        if (trigger == "schedule" and current.status in ("delivered", "cancelled")) or (
                trigger == "replay" and not sent.ok and current.status in ("pending", "retrying")):
            # a scheduled attempt run again, or beaten by a replay, leaves the outcome on record as it is; a failed
            # replay leaves the scheduled attempts as they were
            return current.model_copy(update={"attempts": [*current.attempts, record]})
        next_at = iso_utc(now + timedelta(seconds=retry_in)) if retry_in is not None else None
        return recorded(current, record, ok=sent.ok, final=retry_in is None, next_attempt_at=next_at)

    stored = await _save(store, delivery, etag, with_this_attempt) or with_this_attempt(delivery)
    log_event("webhook.attempt", delivery_id=delivery.id, subscription_id=subscription.id,
              event_type=delivery.event.type, attempt=stored.attempts[-1].number, status_code=sent.status_code,
              ok=sent.ok, duration_ms=round(sent.duration_ms, 1))
    if sent.ok:
        return {"ok": True, "value": {"status_code": sent.status_code}, "usage": []}
    settled = _settled(stored, trigger)
    if settled is not None:
        return settled
    return {"ok": False, "error": {"code": "webhook_failed", "message": sent.error or "delivery failed"},
            "retry_in": retry_in, "usage": []}
