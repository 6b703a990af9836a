"""The Durable SDK, once the app loads: history timestamps read with the standard library, one payload class."""
from __future__ import annotations

import importlib
import json

import pytest
from dateutil.parser import parse as dateutil_parse

from shared.clock import parse_iso

STAMPS = ["2026-11-23T18:59:59.1234567Z", "2026-11-23T18:59:59Z", "2026-11-23T18:59:59.123Z",
          "2026-11-23T18:59:59.123456+00:00", "2026-11-23T18:59:59.5+01:00", "0001-01-01T00:00:00",
          "2026-11-23 18:59:59"]


@pytest.mark.parametrize("stamp", STAMPS)
def test_iso_timestamps_read_as_dateutil_reads_them(stamp):
    parsed = parse_iso(stamp)
    assert parsed == dateutil_parse(stamp) and parsed.utcoffset() == dateutil_parse(stamp).utcoffset()


def test_other_forms_still_read_through_dateutil():
    assert parse_iso("Nov 23 2026 6:59 PM") == dateutil_parse("Nov 23 2026 6:59 PM")
    with pytest.raises(ValueError):
        parse_iso("not a time")


def test_once_the_app_loads_the_sdk_replays_with_it_to_the_same_times(monkeypatch):
    from shared.config import get_settings

    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    get_settings.cache_clear()
    import functions  # noqa: F401 - its bootstrap sets the parser

    get_settings.cache_clear()
    from azure.durable_functions.models.DurableOrchestrationContext import DurableOrchestrationContext

    history_module = importlib.import_module("azure.durable_functions.models.history.HistoryEvent")
    assert history_module.dt_parse is parse_iso
    assert importlib.import_module("azure.durable_functions.models.DurableOrchestrationStatus").dt_parse is parse_iso
    parsed: list[str] = []

    def counting(text: str):
        parsed.append(text)
        return parse_iso(text)

    monkeypatch.setattr(history_module, "dt_parse", counting)  # the SDK really reads its history through it
    started = "2026-11-23T18:59:59.1234567Z"
    context = DurableOrchestrationContext.from_json(json.dumps({
        "history": [{"EventType": 12, "EventId": -1, "IsPlayed": False, "Timestamp": started},
                    {"EventType": 0, "EventId": -1, "IsPlayed": False, "Timestamp": started, "Name": "x",
                     "Version": "", "Input": None}],
        "input": None, "instanceId": "i", "isReplaying": False, "parentInstanceId": None}))
    assert parsed == [started, started]
    assert context.current_utc_datetime == dateutil_parse(started)


def test_once_the_app_loads_orchestrator_calls_reuse_one_payload_class(monkeypatch):
    from shared.config import get_settings

    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    get_settings.cache_clear()
    import functions  # noqa: F401 - its bootstrap caches the class

    get_settings.cache_clear()
    from azure.durable_functions.models.history.HistoryEventType import HistoryEventType
    from azure.durable_functions.models.TaskOrchestrationExecutor import TaskOrchestrationExecutor

    first, second = TaskOrchestrationExecutor(), TaskOrchestrationExecutor()
    completed = first.event_to_SetTaskValuePayload[HistoryEventType.TASK_COMPLETED]
    assert type(completed) is type(second.event_to_SetTaskValuePayload[HistoryEventType.TASK_FAILED])
    assert (completed.is_success, completed.task_id_key) == (True, "TaskScheduledId")
