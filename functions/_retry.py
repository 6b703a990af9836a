"""Orchestrator helpers: call an activity until it succeeds or its retry budget ends, on durable timers."""
from __future__ import annotations

from datetime import timedelta
from typing import Any, Callable, Generator

import azure.durable_functions as df

from shared.webhooks import message_id_for

# Unexpected exceptions (a bug, a storage blip) get Durable's own retries; known failures come back as
# outcomes with `retry_in`, so that a 429's Retry-After and exponential backoff can be honoured.
CRASH_RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=2000, max_number_of_attempts=3)


def call_with_retries(context: df.DurableOrchestrationContext, activity: str, payload: dict,
                      first_only: dict | None = None) -> Generator[Any, Any, dict]:
    """`first_only`: more input for the first attempt alone (not repeated in every retry's history)."""
    attempt, usage = 1, []
    while True:
        given = {**payload, **(first_only if attempt == 1 and first_only else {}), "attempt": attempt}
        outcome = yield context.call_activity_with_retry(activity, CRASH_RETRY, given)
        usage += outcome.get("usage", [])
        if outcome["ok"] or outcome.get("retry_in") is None:
            return {**outcome, "usage": usage, "attempts": attempt}
        yield context.create_timer(context.current_utc_datetime + timedelta(seconds=outcome["retry_in"]))
        attempt += 1


def deliver_callback(context: df.DurableOrchestrationContext, url: str, event_type: str,
                     body: dict) -> Generator[Any, Any, dict]:
    """Posts the finished job to its callback_url, signed, retried with backoff; returns what happened."""
    outcome = yield from call_with_retries(context, "deliver_callback", {
        "url": url, "message_id": message_id_for(context.instance_id, event_type), "body": body})
    record = {"url": url, "status": "delivered" if outcome["ok"] else "failed", "attempts": outcome["attempts"]}
    if outcome["ok"]:
        record["status_code"] = outcome["value"]["status_code"]
    else:
        record["error"] = outcome["error"]
    return record


STEP = "retried_activity"  # the sub-orchestration that runs each fanned-out step of a job (functions/callbacks.py)


def step_id(instance_id: str, number: int, sub_orchestrator: str = STEP) -> str:
    """The instance id of a job's `number`th fanned-out step (from 1): steps start in that order."""
    return f"{instance_id}:{sub_orchestrator}-{number}"


def bounded_fan_out(context: df.DurableOrchestrationContext, sub_orchestrator: str, inputs: list[dict],
                    limit: int, on_done: Callable[[int], Any] | None = None) -> Generator[Any, Any, list[dict]]:
    """Runs one sub-orchestration per input, at most `limit` at a time, results in input order.

    `on_done(count)` runs after each finish (e.g. to set progress). A child that fails outright
    counts as a failed outcome, so one bad item never fails the whole job.
    """
    results: list = [None] * len(inputs)
    running: dict = {}
    started = done = 0
    while done < len(inputs):
        while started < len(inputs) and len(running) < limit:
            task = context.call_sub_orchestrator(sub_orchestrator, inputs[started],
                                                 step_id(context.instance_id, started + 1, sub_orchestrator))
            running[task] = started
            started += 1
        finished = yield context.task_any(list(running))
        index = running.pop(finished)
        results[index] = finished.result if not isinstance(finished.result, Exception) else {
            "ok": False, "error": {"code": "child_failed", "message": str(finished.result)[:300]}, "usage": []}
        done += 1
        if on_done is not None:
            on_done(done)
    return results
