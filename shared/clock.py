"""UTC times as the API writes them: ISO 8601 with a Z."""
from __future__ import annotations

from datetime import datetime, timezone


def iso_utc(moment: datetime | None = None) -> str:
    """`moment` (now when omitted; naive means UTC) as `2026-11-23T12:00:00Z`."""
    moment = moment or datetime.now(timezone.utc)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
