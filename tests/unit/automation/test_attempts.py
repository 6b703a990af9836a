"""A delivery attempt against a loopback receiver, with the store in memory: records, health, what comes next."""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from shared.automation import attempts
from shared.automation import subscriptions as subs
from shared.automation.deliveries import Delivery, delivery_id
from shared.automation.events import new_event
from shared.config import Settings
from shared.errors import Conflict
from shared.http_client import close_all
from tests.support.receiver import Receiver

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
SETTINGS = Settings.model_validate({"AzureWebJobsStorage": "UseDevelopmentStorage=true",
                                    "CALLBACK_ALLOWED_HOSTS": "127.0.0.1", "WEBHOOK_RETRY_SCHEDULE": "10s,1m",
                                    "WEBHOOK_DISABLE_AFTER_DAYS": "2"})


class MemoryStore:
    """Deliveries carry an ETag: the number of times they were written."""

    def __init__(self) -> None:
        self.deliveries: dict[str, Delivery] = {}
        self.etags: dict[str, str] = {}
        self.subscriptions: dict[str, subs.Subscription] = {}
        self.subscription_writes = 0
        self.delivery_reads = 0

    async def delivery(self, subscription_id: str, delivery_id_: str) -> tuple[Delivery, str] | None:
        self.delivery_reads += 1
        found = self.deliveries.get(delivery_id_)
        return None if found is None else (found, self.etags[delivery_id_])

    def put(self, delivery: Delivery) -> None:
        self.deliveries[delivery.id] = delivery
        self.etags[delivery.id] = str(int(self.etags.get(delivery.id, "0")) + 1)

    async def save_delivery(self, delivery: Delivery, etag: str) -> bool:
        if self.etags.get(delivery.id) != etag:
            return False
        self.put(delivery)
        return True

    async def change_delivery(self, subscription_id: str, delivery_id_: str, change) -> Delivery | None:
        current = self.deliveries.get(delivery_id_)
        if current is None:
            return None
        self.put(change(current))
        return self.deliveries[delivery_id_]

    async def subscription(self, subscription_id: str, *, fresh: bool = False) -> subs.Subscription | None:
        return self.subscriptions.get(subscription_id)

    async def change_subscription(self, subscription_id: str, change) -> subs.Subscription | None:
        current = self.subscriptions.get(subscription_id)
        if current is None:
            return None
        changed = change(current)
        if changed != current:
            self.subscription_writes += 1
            self.subscriptions[subscription_id] = changed
        return changed


def setup(receiver: Receiver) -> tuple[MemoryStore, dict]:
    store = MemoryStore()
    subscription, secret = subs.create(subs.SubscriptionIn(url=receiver.url, events=["custom.*"]), NOW, "127.0.0.1")
    receiver.use_secret(secret)
    store.subscriptions[subscription.id] = subscription
    event = new_event("custom.order", "o-1", {"n": 1})
    delivery = Delivery(id=delivery_id(event.id, subscription.id), subscription_id=subscription.id, event=event,
                        created_at="2026-11-23T12:00:00Z")
    store.put(delivery)
    return store, {"subscription_id": subscription.id, "delivery_id": delivery.id}


def first_attempt(store: MemoryStore, task: dict) -> dict:
    """The first scheduled attempt as `publish` starts it: with the delivery as created and its ETag."""
    delivery_id_ = task["delivery_id"]
    return {**task, "attempt": 1, "first": {"delivery": store.deliveries[delivery_id_].model_dump(),
                                            "etag": store.etags[delivery_id_]}}


def run(store: MemoryStore, task: dict, now: datetime = NOW) -> dict:
    async def go() -> dict:
        try:
            return await attempts.attempt(store, task, SETTINGS, now)
        finally:
            await close_all()

    return asyncio.run(go())


def test_a_failure_is_recorded_and_retried_on_the_schedule_then_delivered():
    with Receiver() as receiver:
        store, task = setup(receiver)
        receiver.script.append(503)
        first = run(store, {**task, "attempt": 1})
        assert first["ok"] is False and 8 <= first["retry_in"] <= 12
        delivery = store.deliveries[task["delivery_id"]]
        assert delivery.status == "retrying" and delivery.attempts[0].status_code == 503
        second = run(store, {**task, "attempt": 2})
        assert second["ok"] is True and store.deliveries[task["delivery_id"]].status == "delivered"
        assert [r["verified"] for r in receiver.attempts] == [True, True]


def test_the_last_scheduled_failure_fails_the_delivery_for_good():
    with Receiver() as receiver:
        store, task = setup(receiver)
        receiver.script.append(500)
        assert run(store, {**task, "attempt": 3})["retry_in"] is None
        assert store.deliveries[task["delivery_id"]].status == "failed"


def test_410_disables_the_subscription_and_ends_the_delivery():
    with Receiver() as receiver:
        store, task = setup(receiver)
        receiver.script.append(410)
        outcome = run(store, {**task, "attempt": 1})
        assert outcome["retry_in"] is None
        assert store.subscriptions[task["subscription_id"]].enabled is False


def test_a_health_change_that_cannot_be_written_does_not_fail_the_delivery_made():
    class Contended(MemoryStore):
        async def change_subscription(self, subscription_id, change):
            raise Conflict("kept changing", code="concurrent_update", transient=True)

    with Receiver() as receiver:
        store, task = setup(receiver)
        contended = Contended()
        contended.deliveries, contended.etags, contended.subscriptions = store.deliveries, store.etags, \
            store.subscriptions
        receiver.script.append(410)
        outcome = run(contended, {**task, "attempt": 1})
        assert outcome["retry_in"] is None and len(receiver.attempts) == 1  # answered, not crashed into a resend


def test_failing_for_the_configured_days_disables_the_subscription():
    with Receiver() as receiver:
        store, task = setup(receiver)
        receiver.script.extend([500, 500])
        run(store, {**task, "attempt": 1})
        outcome = run(store, {**task, "attempt": 2}, NOW + timedelta(days=2))
        assert outcome["retry_in"] is None and not store.subscriptions[task["subscription_id"]].enabled


def test_a_scheduled_attempt_after_a_successful_replay_sends_nothing():
    with Receiver() as receiver:
        store, task = setup(receiver)
        receiver.script.append(500)
        run(store, {**task, "attempt": 1})
        assert run(store, {**task, "attempt": 1, "trigger": "replay"})["ok"] is True
        assert run(store, {**task, "attempt": 2})["ok"] is True
        assert len(receiver.attempts) == 2
        assert [a.trigger for a in store.deliveries[task["delivery_id"]].attempts] == ["schedule", "replay"]


def test_a_failed_replay_leaves_the_scheduled_retries_in_place():
    with Receiver() as receiver:
        store, task = setup(receiver)
        receiver.script.extend([500, 500])
        run(store, {**task, "attempt": 1})
        run(store, {**task, "attempt": 1, "trigger": "replay"})
        delivery = store.deliveries[task["delivery_id"]]
        assert delivery.status == "retrying" and len(delivery.attempts) == 2


@pytest.mark.parametrize("change", ["deleted", "disabled"])
def test_an_inactive_subscription_cancels_without_sending(change):
    with Receiver() as receiver:
        store, task = setup(receiver)
        if change == "deleted":
            store.subscriptions.clear()
        else:
            sub = store.subscriptions[task["subscription_id"]]
            store.subscriptions[sub.id] = sub.model_copy(update={"enabled": False})
        outcome = run(store, {**task, "attempt": 1})
        assert outcome["retry_in"] is None and receiver.attempts == []
        assert store.deliveries[task["delivery_id"]].status == "cancelled"


def test_steady_successes_do_not_rewrite_the_subscription():
    with Receiver() as receiver:
        store, task = setup(receiver)
        run(store, {**task, "attempt": 1})
        writes = store.subscription_writes
        run(store, {**task, "attempt": 1, "trigger": "replay"}, NOW + timedelta(seconds=10))
        assert store.subscription_writes == writes


def test_the_first_attempt_does_not_read_back_the_delivery_it_was_given():
    with Receiver() as receiver:
        store, task = setup(receiver)
        assert run(store, first_attempt(store, task))["ok"] is True
        assert store.delivery_reads == 0
        delivery = store.deliveries[task["delivery_id"]]
        assert delivery.status == "delivered" and [a.number for a in delivery.attempts] == [1]


def test_a_replay_recorded_before_the_first_attempt_is_kept_beside_it():
    with Receiver() as receiver:
        store, task = setup(receiver)
        first = first_attempt(store, task)  # started, but waiting for a free slot...
        receiver.script.append(500)
        run(store, {**task, "attempt": 1, "trigger": "replay"})  # ...while an operator replays the delivery
        assert run(store, first)["ok"] is True
        delivery = store.deliveries[task["delivery_id"]]
        assert [(a.number, a.trigger, a.status_code) for a in delivery.attempts] == [
            (1, "replay", 500), (2, "schedule", 200)]
        assert delivery.status == "delivered"


def test_a_first_attempt_run_again_after_it_delivered_keeps_the_delivery_delivered():
    with Receiver() as receiver:
        store, task = setup(receiver)
        first = first_attempt(store, task)
        assert run(store, first)["ok"] is True  # delivered and recorded; the host dies before the result is stored
        receiver.script.append(503)
        again = run(store, first)  # at-least-once: the same input, with its snapshot and ETag now stale
        assert again["ok"] is True and again.get("retry_in") is None  # no further attempts are scheduled
        delivery = store.deliveries[task["delivery_id"]]
        assert delivery.status == "delivered"
        assert [(a.number, a.status_code) for a in delivery.attempts] == [(1, 200), (2, 503)]


def test_a_first_attempt_run_again_for_a_disabled_subscription_keeps_the_record_of_the_delivery():
    with Receiver() as receiver:
        store, task = setup(receiver)
        first = first_attempt(store, task)
        assert run(store, first)["ok"] is True
        sub = store.subscriptions[task["subscription_id"]]
        store.subscriptions[sub.id] = sub.model_copy(update={"enabled": False})
        assert run(store, first)["error"]["code"] == "subscription_inactive"
        delivery = store.deliveries[task["delivery_id"]]
        assert delivery.status == "delivered" and [a.status_code for a in delivery.attempts] == [200]
