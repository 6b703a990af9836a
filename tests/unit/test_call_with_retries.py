"""call_with_retries drives an activity until it succeeds or gives up; what each attempt is given."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest


@pytest.fixture(autouse=True)
def call_with_retries(monkeypatch):
    """The helper lives in the functions package, whose import loads the app's settings."""
    from shared.config import get_settings

    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    get_settings.cache_clear()
    from functions._retry import call_with_retries as helper

    yield helper
    get_settings.cache_clear()


class Context:
    current_utc_datetime = datetime(2026, 11, 23, tzinfo=timezone.utc)

    def __init__(self) -> None:
        self.inputs: list[dict] = []

    def call_activity_with_retry(self, name: str, options, payload: dict) -> tuple:
        self.inputs.append(payload)
        return ("activity", name)

    def create_timer(self, fire_at: datetime) -> tuple:
        return ("timer", fire_at)


def drive(helper, context: Context, outcomes: list[dict], **kwargs) -> dict:
    steps = helper(context, "attempt_webhook", {"delivery_id": "d1"}, **kwargs)
    step = next(steps)
    answers = iter(outcomes)
    try:
        while True:
            step = steps.send(next(answers) if step[0] == "activity" else None)
    except StopIteration as done:
        return done.value


def test_the_first_attempt_alone_gets_the_first_only_input_and_retries_follow_the_schedule(call_with_retries):
    context = Context()
    result = drive(call_with_retries, context, [{"ok": False, "retry_in": 5, "error": {"code": "x"}},
                             {"ok": False, "retry_in": 30, "error": {"code": "x"}}, {"ok": True, "value": 1}],
                   first_only={"first": {"etag": "e1"}})
    assert result["ok"] is True and result["attempts"] == 3
    assert context.inputs == [{"delivery_id": "d1", "first": {"etag": "e1"}, "attempt": 1},
                              {"delivery_id": "d1", "attempt": 2}, {"delivery_id": "d1", "attempt": 3}]


def test_an_outcome_without_retry_in_ends_the_attempts(call_with_retries):
    context = Context()
    result = drive(call_with_retries, context, [{"ok": False, "retry_in": None, "error": {"code": "gone"}}])
    assert result["ok"] is False and result["attempts"] == 1 and len(context.inputs) == 1
