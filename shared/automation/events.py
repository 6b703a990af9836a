"""Domain events: the catalogue of types and the stable envelope every subscriber and rule receives."""
from __future__ import annotations

import fnmatch
import json
import re
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..clock import iso_utc

if TYPE_CHECKING:
    from ..storage.tables import Tables

CATALOGUE: dict[str, str] = {
    "offer.parsed": "An offer was read into structured data (data: the offer, job_id, metadata).",
    "offer.failed": "An offer could not be read (data: error, job_id, metadata).",
    "document.processed": "A document was read page by page (data: the document result, state, job_id).",
    "call.analyzed": "A call recording was transcribed and analysed (data: call id, title, analysis, cost).",
    "whatsapp.message.received": "A customer's WhatsApp message was accepted (data: chat_id, message id, kind).",
    "whatsapp.reply.sent": "The assistant answered a WhatsApp turn (data: chat_id, reply text).",
    "whatsapp.handoff.requested": "A customer asked for a person, or the assistant could not answer.",
    "job.failed": "Any job ended failed (data: job_id, capability, error).",
}
CUSTOM_PREFIX = "custom."  # events a business publishes itself through POST /api/events


class Event(BaseModel):
    """The envelope: `id` is unique per event and stays the same on every delivery of it."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="Unique event id (evt_...); receivers deduplicate on it")
    type: str = Field(description="Event type, e.g. offer.parsed")
    occurred_at: str = Field(description="When it happened, ISO 8601 UTC")
    subject: str = Field(description="What it is about: a job id, a call id, a chat id")
    data: dict[str, Any] = Field(default_factory=dict, description="Type-specific payload")


MAX_CUSTOM_DATA_BYTES = 256 * 1024  # each delivery carries the event: in the task hub and in a log row (1 MiB)


class CustomEventIn(BaseModel):
    """An event a business publishes itself: only `custom.*` types, the others come from the app."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(pattern=r"^custom\.[a-z0-9_.-]{1,100}$", description="custom.<name>")
    subject: str = Field("", max_length=200)
    data: dict[str, Any] = Field(default_factory=dict, description=f"At most {MAX_CUSTOM_DATA_BYTES:,} bytes as JSON")
    id: str | None = Field(None, pattern=r"^[A-Za-z0-9_:-]{1,100}$",
                           description="Your own id: the same id is published (and delivered) once. It is the "
                                       "deliveries' webhook-id, which holds no '.' (Standard Webhooks signs "
                                       "id.timestamp.body)")

    @field_validator("data")
    @classmethod
    def _small_enough(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(json.dumps(value, separators=(",", ":")).encode()) > MAX_CUSTOM_DATA_BYTES:
            raise ValueError(f"data may hold at most {MAX_CUSTOM_DATA_BYTES:,} bytes of JSON")
        return value


def new_event(type_: str, subject: str, data: dict[str, Any], *, event_id: str | None = None,
              occurred_at: datetime | None = None) -> Event:
    """Orchestrators pass `event_id` and `occurred_at` from their context, so that replays build the same event."""
    return Event(id=event_id or f"evt_{uuid.uuid4().hex}", type=type_, subject=subject, data=data,
                 occurred_at=iso_utc(occurred_at))


CUSTOM_IDS = "CustomEventIds"


async def claim_custom_id(tables: "Tables", body: CustomEventIn) -> None:
    """The caller's own event id is published once: a re-send of the same event is a no-op, and the same id with
    another type, subject or data is a 409 (it would be dropped without a word: deliveries and rules are per id)."""
    from ..errors import Conflict
    from ..jobs import request_fingerprint

    fingerprint = request_fingerprint(body.model_dump(mode="json"))
    if await tables.insert(CUSTOM_IDS, body.id, "event", {"fingerprint": fingerprint, "at": iso_utc()}):
        return
    stored = await tables.get(CUSTOM_IDS, body.id, "event")
    if stored is not None and stored.get("fingerprint") != fingerprint:
        raise Conflict(f"The event id '{body.id}' was already published with other content.", code="event_id_reused")


MAX_PATTERN_CHARS = 200  # of an event pattern a rule or subscription listens to


# custom.<name> as CustomEventIn.type allows it, with * and ? standing for characters: `custom.Foo` or `custom.a b`
# could never match an event that may be published.
_CUSTOM_PATTERN = re.compile(r"custom\.[a-z0-9_.*?-]{1,100}")


def validate_pattern(pattern: str) -> str:
    """`offer.parsed`, `offer.*`, `whatsapp.*`, `*` or `custom.*`; a pattern that can match nothing is a ValueError."""
    probe = [t for t in CATALOGUE if fnmatch.fnmatchcase(t, pattern)]
    if probe or _CUSTOM_PATTERN.fullmatch(pattern) or pattern == "*":
        return pattern
    raise ValueError(f"'{pattern}' matches no event type; known types: {', '.join(CATALOGUE)} and {CUSTOM_PREFIX}*")


def matches(patterns: list[str], type_: str) -> bool:
    return any(fnmatch.fnmatchcase(type_, p) for p in patterns)
