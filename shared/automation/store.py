"""Automation data in Table storage: subscriptions, deliveries, templates, rules and notifications."""
from __future__ import annotations

from typing import AsyncIterator, Callable

from ..errors import NotFound
from ..storage.tables import Tables
from .deliveries import Delivery
from .snapshot import Snapshot
from .subscriptions import Subscription

SUBSCRIPTIONS, DELIVERIES = "subscriptions", "deliveries"
_ALL = "all"  # the one partition of small collections
_snapshot: Snapshot[list[Subscription]] = Snapshot()  # every event reads the subscriptions: keep them a moment


def subscription_not_found(subscription_id: str) -> NotFound:
    return NotFound(f"No webhook subscription '{subscription_id}'.", code="subscription_not_found")


class WebhookStore:
    def __init__(self, tables: Tables) -> None:
        self.tables = tables

    async def save_subscription(self, subscription: Subscription) -> None:
        await self.tables.upsert(SUBSCRIPTIONS, _ALL, subscription.id, subscription.model_dump())
        _snapshot.clear()

    async def change_subscription(self, subscription_id: str,
                                  change: Callable[[Subscription], Subscription]) -> Subscription | None:
        """`change` applied to the stored subscription, safe against concurrent writers (a 410 that disables it,
        a rotation, an enable); None when it was deleted."""
        row = await self.tables.change(SUBSCRIPTIONS, _ALL, subscription_id,
                                       lambda row: change(Subscription.model_validate(row)).model_dump())
        _snapshot.clear()
        return None if row is None else Subscription.model_validate(row)

    async def subscription(self, subscription_id: str, *, fresh: bool = False) -> Subscription | None:
        """`fresh` reads the table; otherwise the list read in the last few seconds may answer.

        Changes made by another instance apply within a few seconds (Snapshot); this instance's own at once.
        """
        if not fresh:
            return next((s for s in await self.subscriptions() if s.id == subscription_id), None)
        row = await self.tables.get(SUBSCRIPTIONS, _ALL, subscription_id)
        return None if row is None else Subscription.model_validate(row)

    async def require_subscription(self, subscription_id: str) -> Subscription:
        found = await self.subscription(subscription_id, fresh=True)
        if found is None:
            raise subscription_not_found(subscription_id)
        return found

    async def subscriptions(self, *, fresh: bool = False) -> list[Subscription]:
        async def load() -> list[Subscription]:
            return sorted([Subscription.model_validate(row)
                           async for _, row in self.tables.partition(SUBSCRIPTIONS, _ALL)], key=lambda s: s.created_at)

        return await _snapshot.get(load, fresh=fresh)

    async def delete_subscription(self, subscription_id: str) -> None:
        await self.require_subscription(subscription_id)
        await self.tables.delete(SUBSCRIPTIONS, _ALL, subscription_id)
        _snapshot.clear()

    @staticmethod
    def _columns(row: dict) -> dict:
        """A delivery's fields that queries filter on, from its stored form."""
        return {"Status": row["status"], "DeliveryId": row["id"], "CreatedAt": row["created_at"]}

    async def create_delivery(self, delivery: Delivery) -> str | None:
        """The stored delivery's ETag; None when this event was already routed to this subscription."""
        row = delivery.model_dump()
        return await self.tables.insert_tagged(DELIVERIES, delivery.subscription_id, delivery.id, row,
                                               self._columns(row))

    async def save_delivery(self, delivery: Delivery, etag: str) -> bool:
        """Only if nobody changed the delivery since `etag` (False otherwise)."""
        row = delivery.model_dump()
        return await self.tables.replace_unchanged(DELIVERIES, delivery.subscription_id, delivery.id, row,
                                                   self._columns(row), etag)

    async def change_delivery(self, subscription_id: str, delivery_id: str,
                              change: Callable[[Delivery], Delivery]) -> Delivery | None:
        """`change` applied to the stored delivery, safe against concurrent attempts and replays; None when gone."""
        row = await self.tables.change(
            DELIVERIES, subscription_id, delivery_id,
            lambda row: change(Delivery.model_validate(row)).model_dump(), columns=self._columns)
        return None if row is None else Delivery.model_validate(row)

    async def delivery(self, subscription_id: str, delivery_id: str) -> tuple[Delivery, str] | None:
        """The delivery and its ETag."""
        found = await self.tables.get_tagged(DELIVERIES, subscription_id, delivery_id)
        return None if found is None else (Delivery.model_validate(found[0]), found[1])

    async def find_delivery(self, delivery_id: str) -> Delivery:
        async for _, _, row in self.tables.query(DELIVERIES, "DeliveryId eq @id", {"id": delivery_id}):
            return Delivery.model_validate(row)
        raise NotFound(f"No webhook delivery '{delivery_id}'.", code="delivery_not_found")

    async def deliveries(self, subscription_id: str | None, status: str | None) -> AsyncIterator[Delivery]:
        where, parameters = ("Status eq @status", {"status": status}) if status else ("DeliveryId ne ''", {})
        async for _, _, row in self.tables.query(DELIVERIES, where, parameters, partition=subscription_id or None):
            yield Delivery.model_validate(row)
