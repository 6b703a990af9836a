"""Webhook deliveries: one per event and subscription, with every attempt on record."""
from __future__ import annotations

import hashlib
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from .events import Event

Status = Literal["pending", "retrying", "delivered", "failed", "cancelled"]
STATUSES: tuple[str, ...] = get_args(Status)


class AttemptRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    number: int
    at: str
    status_code: int | None = None
    error: str | None = None
    duration_ms: float = 0.0
    trigger: Literal["schedule", "replay"] = "schedule"


class Delivery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    subscription_id: str
    event: Event
    status: Status = "pending"
    attempts: list[AttemptRecord] = Field(default_factory=list)
    created_at: str
    next_attempt_at: str | None = None
    replays: int = 0

    def summary(self) -> dict:
        """The list view: everything but the event's data."""
        return {**self.model_dump(exclude={"event"}), "event_id": self.event.id, "event_type": self.event.type}


def delivery_id(event_id: str, subscription_id: str) -> str:
    """The same event and subscription always give the same delivery: a re-published event is not resent."""
    return "dlv_" + hashlib.sha256(f"{event_id}|{subscription_id}".encode()).hexdigest()[:24]


def recorded(delivery: Delivery, attempt: AttemptRecord, *, ok: bool, final: bool,
             next_attempt_at: str | None) -> Delivery:
    """The delivery after one more attempt: delivered, failed for good, or waiting for the next try."""
    status: Status = "delivered" if ok else ("failed" if final else "retrying")
    return delivery.model_copy(update={"attempts": [*delivery.attempts, attempt], "status": status,
                                       "next_attempt_at": None if ok or final else next_attempt_at})
