"""Orchestrations of the sample app driven by devhost through the SDK's replay protocol."""
from __future__ import annotations

import json
import logging
import re
import uuid
from datetime import datetime

import sample_app
from helpers import MAX_ACTIVITIES, eventually


def _events(status: dict, kind: str) -> list[dict]:
    return [e for e in status["historyEvents"] if e["EventType"] == kind]


def test_activities_run_in_sequence_and_their_results_feed_the_next(start, wait_done):
    done = wait_done(start("chain", 4))
    assert done["runtimeStatus"] == "Completed"
    assert done["output"] == 4
    scheduled = _events(done, "TaskScheduled")
    assert [e["Name"] for e in scheduled] == ["add_one"] * 4
    assert [e["Result"] for e in _events(done, "TaskCompleted")] == [1, 2, 3, 4]


def test_sync_and_async_activities_both_return_results(start, wait_done):
    done = wait_done(start("mixed_activities", 4))
    assert (done["runtimeStatus"], done["output"]) == ("Completed", 10)  # double_async(add_one(4))


def test_retry_options_retry_until_the_activity_succeeds(start, wait_done):
    done = wait_done(start("retrying", {"activity": "fails_twice", "attempts": 3, "key": "r1"}))
    assert done["runtimeStatus"] == "Completed"
    assert done["output"] == "ok after 3"
    assert sample_app.calls["r1"] == 3
    assert len(_events(done, "TaskFailed")) == 2


def test_exhausted_retries_fail_the_orchestration_with_the_activity_message(start, wait_done):
    done = wait_done(start("retrying", {"activity": "always_fails", "attempts": 2, "key": "r2"}))
    assert done["runtimeStatus"] == "Failed"
    assert "Orchestrator function 'retrying' failed" in done["output"]
    assert "boom r2" in done["output"]
    assert sample_app.calls["r2"] == 2  # exactly max_number_of_attempts calls, no more


def test_activity_failure_can_be_caught_in_the_orchestrator(start, wait_done):
    done = wait_done(start("catches_failure", "c1"))
    assert done["runtimeStatus"] == "Completed"
    assert done["output"] == "caught: Activity function 'always_fails' failed: boom c1 "


def test_exception_in_orchestrator_fails_it_with_the_message(start, wait_done):
    done = wait_done(start("crashes"))
    assert done["runtimeStatus"] == "Failed"
    assert done["output"] == "Orchestrator function 'crashes' failed: kaput in the orchestrator"


def test_fan_out_fan_in_returns_all_results(start, wait_done):
    done = wait_done(start("fan_out", 10))
    assert done["runtimeStatus"] == "Completed"
    assert done["output"] == sum(2 * i for i in range(10))
    assert len(_events(done, "TaskScheduled")) == 10


def test_activities_run_concurrently_but_never_above_max_activities(start, wait_done):
    done = wait_done(start("probe_fan_out", {"n": 2 * MAX_ACTIVITIES + 2, "seconds": 0.15}))
    assert done["output"] == 2 * MAX_ACTIVITIES + 2
    # every slot was used at once, and never one more
    assert sample_app.concurrency["peak"] == MAX_ACTIVITIES
    assert sample_app.concurrency["active"] == 0


def test_sub_orchestrations_run_with_generated_and_explicit_instance_ids(start, wait_done, status):
    parent_id = start("parent", instance_id="family")
    done = wait_done(parent_id)
    assert (done["runtimeStatus"], done["output"]) == ("Completed", [2, 3])
    children = [e["InstanceId"] for e in _events(done, "SubOrchestrationInstanceCreated")]
    assert children[1] == "family-child"
    assert children[0] not in ("family", "family-child")
    for child_id, expected in zip(children, [2, 3]):
        child = status(child_id)
        assert (child["name"], child["runtimeStatus"], child["output"]) == ("chain", "Completed", expected)


def test_continue_as_new_restarts_with_fresh_history(start, wait_done):
    done = wait_done(start("counter_loop", 0))
    assert done["runtimeStatus"] == "Completed"
    assert done["output"] == 3
    assert done["input"] == "3"  # the input of the last execution
    assert done["customStatus"] == {"count": 3, "history": "fresh"}
    # three earlier executions each scheduled an activity; the final one starts from an empty history
    assert [e["EventType"] for e in done["historyEvents"]] == ["ExecutionStarted"]


def test_custom_status_is_visible_while_the_orchestration_runs(start, wait_done, status):
    instance_id = start("progress", 3)
    running = eventually(lambda: (s := status(instance_id))["runtimeStatus"] == "Running"
                         and (s["customStatus"] or {}).get("current", 0) >= 1 and s,
                         what="progress to report a step")
    assert running["customStatus"]["total"] == 3
    done = wait_done(instance_id)
    assert done["customStatus"] == {"current": 3, "total": 3}


def test_new_uuid_current_time_and_is_replaying_are_deterministic(start, wait_done):
    done = wait_done(start("deterministic"))
    assert done["runtimeStatus"] == "Completed"
    out = done["output"]
    first, second = out["uuids"]
    assert uuid.UUID(first) and uuid.UUID(second) and first != second
    # the activity got the uuid made in the first episode; the output was made while replaying it
    assert out["echoed"] == first
    # the final episode replays the first one, then runs new code
    assert out["replaying"] == [True, False]
    # current_utc_datetime is the episode's start time from history, not the wall clock
    started_at = datetime.fromisoformat(_events(done, "ExecutionStarted")[0]["Timestamp"].replace("Z", "+00:00"))
    completed_at = datetime.fromisoformat(_events(done, "TaskCompleted")[0]["Timestamp"].replace("Z", "+00:00"))
    assert datetime.fromisoformat(out["started"]) == started_at
    assert datetime.fromisoformat(out["now"]) == completed_at


def test_each_activity_invocation_logs_one_line(start, wait_done, caplog):
    caplog.set_level(logging.INFO, logger="devhost")
    instance_id = start("catches_failure", "logged")
    wait_done(instance_id)
    start("chain", 1, instance_id="logged-ok")
    wait_done("logged-ok")

    def lines(function: str) -> list[str]:
        return [r.getMessage() for r in caplog.records
                if r.name == "devhost" and r.getMessage().startswith(f"function={function} ")]

    [failed] = lines("always_fails")
    [succeeded] = lines("add_one")
    for line, instance, outcome in ((failed, instance_id, "Failed"), (succeeded, "logged-ok", "Succeeded")):
        assert f"instance={instance} " in line
        assert "duration_ms=" in line
        assert line.endswith(f"outcome={outcome}")
    orchestrator_lines = lines("chain")
    assert orchestrator_lines and all("instance=logged-ok" in line for line in orchestrator_lines)


def test_every_kind_of_invocation_logs_function_instance_duration_and_outcome(http, start, wait_done, caplog):
    caplog.set_level(logging.INFO, logger="devhost")
    assert http.request("GET", "/api/echo/1")[0] == 200
    wait_done(start("chain", 1, instance_id="logs-1"))
    wait_done(start("uses_entity", "logs", instance_id="logs-2"))

    def lines() -> list[str]:
        return [m for r in list(caplog.records) if r.name == "devhost" and "duration_ms=" in (m := r.getMessage())]

    eventually(lambda: any(" kind=timer " in line for line in lines()), timeout=3, what="a timer firing")
    shape = re.compile(r"function=\S+ kind=(\w+) instance=\S+ .*duration_ms=\d+\.\d .*outcome=\w+")
    kinds = set()
    for line in lines():
        match = shape.fullmatch(line)
        assert match, line
        kinds.add(match.group(1))
    assert kinds == {"http", "orchestrator", "activity", "entity", "timer"}
    assert len([line for line in lines() if line.startswith("function=echo ")]) == 1


def test_raised_event_data_reaches_the_orchestrator_as_json_text(host, client, start, wait_done):
    instance_id = start("wait_with_timeout", 30)
    host.run(client.raise_event(instance_id, "Approval", {"by": "bob", "ok": True}))
    done = wait_done(instance_id)
    # as in Azure (azure-functions-durable-python#295) the orchestrator gets the data's JSON text
    assert json.loads(done["output"]["approved"]) == {"by": "bob", "ok": True}
