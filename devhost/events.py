"""History events in the shape the Durable extension hands to the Python SDK (DTFx field names)."""
from __future__ import annotations

from datetime import datetime, timezone
from enum import IntEnum
from typing import Any


class EventType(IntEnum):
    EXECUTION_STARTED = 0
    EXECUTION_COMPLETED = 1
    EXECUTION_FAILED = 2
    EXECUTION_TERMINATED = 3
    TASK_SCHEDULED = 4
    TASK_COMPLETED = 5
    TASK_FAILED = 6
    SUB_ORCHESTRATION_CREATED = 7
    SUB_ORCHESTRATION_COMPLETED = 8
    SUB_ORCHESTRATION_FAILED = 9
    TIMER_CREATED = 10
    TIMER_FIRED = 11
    ORCHESTRATOR_STARTED = 12
    ORCHESTRATOR_COMPLETED = 13
    EVENT_SENT = 14
    EVENT_RAISED = 15
    CONTINUE_AS_NEW = 16
    EXECUTION_SUSPENDED = 19
    EXECUTION_RESUMED = 20


# Events that resolve a task the orchestrator scheduled, and the field naming that task.
COMPLETION_KEYS = {
    EventType.TASK_COMPLETED: "TaskScheduledId",
    EventType.TASK_FAILED: "TaskScheduledId",
    EventType.SUB_ORCHESTRATION_COMPLETED: "TaskScheduledId",
    EventType.SUB_ORCHESTRATION_FAILED: "TaskScheduledId",
    EventType.TIMER_FIRED: "TimerId",
}
SCHEDULING_TYPES = {
    EventType.TASK_SCHEDULED,
    EventType.SUB_ORCHESTRATION_CREATED,
    EventType.TIMER_CREATED,
    EventType.EVENT_SENT,
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(moment: datetime) -> str:
    """UTC ISO text with a literal Z, the only form the SDK reads without surprises."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def event(kind: EventType, when: datetime, event_id: int = -1, **fields: Any) -> dict:
    return {"EventType": int(kind), "EventId": event_id, "IsPlayed": False, "Timestamp": iso(when), **fields}
