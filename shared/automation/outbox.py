"""Notification records, templates and per-recipient rate state in Table storage."""
from __future__ import annotations

import hashlib
import re
import uuid
from typing import AsyncIterator

from ..blocking import in_thread
from ..errors import Conflict, NotFound, Unprocessable
from ..storage.tables import Tables
from ..whatsapp.ratelimit import RateDecision, RateState, admit
from .notifications import Notification, NotificationIn, check_content, recipient_key
from .templates import Rendered, TemplateIn, render

TEMPLATES, NOTIFICATIONS, LIMITS = "templates", "notifications", "notifylimits"
_ALL = "all"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
HOUR = 3600.0


def notification_id(idempotency_key: str | None) -> str:
    if idempotency_key:
        return "ntf_" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]
    return "ntf_" + uuid.uuid4().hex[:24]


def validate_template_name(name: str) -> str:
    if not _NAME.match(name):
        raise Unprocessable("A template name is 1-64 lowercase letters, digits, '_', '.' or '-'.",
                            code="invalid_template_name")
    return name


class Outbox:
    def __init__(self, tables: Tables) -> None:
        self.tables = tables

    # templates

    async def template(self, name: str) -> TemplateIn:
        row = await self.tables.get(TEMPLATES, _ALL, name)
        if row is None:
            raise NotFound(f"No template '{name}'.", code="template_not_found")
        return TemplateIn.model_validate(row)

    async def templates(self) -> list[dict]:
        return sorted([{"name": rk, **row} async for rk, row in self.tables.partition(TEMPLATES, _ALL)],
                      key=lambda t: t["name"])

    async def create_template(self, name: str, template: TemplateIn) -> None:
        if not await self.tables.insert(TEMPLATES, _ALL, validate_template_name(name), template.model_dump()):
            raise Conflict(f"A template '{name}' exists; PUT replaces it.", code="template_exists")

    async def replace_template(self, name: str, template: TemplateIn) -> None:
        await self.template(name)
        await self.tables.upsert(TEMPLATES, _ALL, name, template.model_dump())

    async def delete_template(self, name: str) -> None:
        await self.template(name)
        await self.tables.delete(TEMPLATES, _ALL, name)

    async def content(self, request: NotificationIn) -> Rendered:
        """Rendered now, so that a template error (or a message its channel cannot send) is the caller's 422 and
        later edits do not change it."""
        if request.template is not None:
            return check_content(request.channel, await in_thread(render, await self.template(request.template),
                                                                  request.data))
        inline = TemplateIn.model_construct(subject=request.subject or "", text=request.body or "",
                                            html=request.html or "")  # not compiled here: the worker does it
        return check_content(request.channel, await in_thread(render, inline, request.data, text_name="body"))

    # notifications

    @staticmethod
    def _columns(notification: Notification) -> dict:
        return {"Status": notification.status, "Recipient": recipient_key(notification.channel, notification.to),
                "CreatedAt": notification.created_at}

    async def create(self, notification: Notification) -> tuple[Notification, bool]:
        """The notification stored under its id (the idempotency key's), and whether this call stored it; the same
        key with another request is a 409."""
        if await self.tables.insert(NOTIFICATIONS, notification.id, "n", notification.model_dump(),
                                    self._columns(notification)):
            return notification, True
        stored = await self.get(notification.id)
        if stored.fingerprint not in (None, notification.fingerprint):  # None: stored before fingerprints were kept
            raise Conflict("This idempotency key was already used with a different notification.",
                           code="idempotency_key_reused")
        return stored, False

    async def save(self, notification: Notification) -> None:
        await self.tables.upsert(NOTIFICATIONS, notification.id, "n", notification.model_dump(),
                                 self._columns(notification))

    async def get(self, notification_id_: str) -> Notification:
        row = await self.tables.get(NOTIFICATIONS, notification_id_, "n")
        if row is None:
            raise NotFound(f"No notification '{notification_id_}'.", code="notification_not_found")
        return Notification.model_validate(row)

    async def list(self, status: str | None, to: str | None, channel: str | None) -> AsyncIterator[Notification]:
        clauses, parameters = ["RowKey eq 'n'"], {}
        if status:
            clauses.append("Status eq @status")
            parameters["status"] = status
        if to and channel:
            clauses.append("Recipient eq @recipient")
            parameters["recipient"] = recipient_key(channel, to)
        async for _, _, row in self.tables.query(NOTIFICATIONS, " and ".join(clauses), parameters):
            yield Notification.model_validate(row)

    async def admit(self, channel: str, to: str, now: float, limit: int) -> RateDecision:
        """The recipient's hourly budget: over it, the notification waits for room (it is never dropped)."""
        decisions: list[RateDecision] = []

        def counted(row: dict) -> dict:  # run again if another notification to them was counted meanwhile
            decisions.append(admit(RateState.model_validate(row) if row else None, now, limit=limit, window_s=HOUR))
            return decisions[-1].state.model_dump() if decisions[-1].allowed or not row.get("notified") else row

        await self.tables.change(LIMITS, recipient_key(channel, to), "state", counted, create=True)
        return decisions[-1]
