"""Entities, durable timers, external events racing timers, and the timer trigger."""
from __future__ import annotations

import json
import time

import azure.functions as func
import pytest
import sample_app
from azure.durable_functions import EntityId
from helpers import FUNCTION_KEY, MASTER_KEY, Http, eventually


def _types(status: dict) -> list[str]:
    return [e["EventType"] for e in status["historyEvents"]]


# ---------------------------------------------------------------- entities


def test_orchestrator_calls_and_signals_a_function_based_entity(host, client, start, wait_done):
    done = wait_done(start("uses_entity", "o1"))
    assert done["runtimeStatus"] == "Completed"
    # add 5 -> 5; signal add 1 (fire and forget, applied before the next call); add 10 -> 16
    assert done["output"][:2] == [5, 16]
    assert _types(done).count("EventSent") == 4  # two calls, one signal, the failing call
    state = host.run(client.read_entity_state(EntityId("Counter", "o1")))
    assert (state.entity_exists, state.entity_state) == (True, 16)


def test_entity_error_surfaces_as_exception_in_the_orchestrator(host, client, start, wait_done):
    done = wait_done(start("uses_entity", "o2"))
    assert done["runtimeStatus"] == "Completed"  # the orchestrator caught it
    assert done["output"] == [5, 16, "bad op"]
    # the failed operation did not change the state (entity names are case-insensitive)
    assert host.run(client.read_entity_state(EntityId("counter", "o2"))).entity_state == 16


def test_signal_sent_in_the_final_episode_still_reaches_the_entity(host, client, start, wait_done):
    done = wait_done(start("signal_and_finish", "last"))
    assert (done["runtimeStatus"], done["output"]) == ("Completed", "signalled")
    eventually(lambda: host.run(client.read_entity_state(EntityId("Counter", "last"))).entity_state == 7,
               what="the signal to be applied")


def test_entities_with_different_keys_keep_separate_state(host, client):
    first, second = EntityId("Counter", "k1"), EntityId("Counter", "k2")
    host.run(client.signal_entity(first, "add", 1))
    host.run(client.signal_entity(second, "add", 2))
    eventually(lambda: host.run(client.read_entity_state(second)).entity_state == 2, what="k2's signal")
    assert host.run(client.read_entity_state(first)).entity_state == 1


# ---------------------------------------------------------------- durable timers and events


def test_durable_timer_waits_and_current_utc_datetime_moves_past_it(start, wait_done):
    began = time.monotonic()
    done = wait_done(start("durable_timer", 1))
    assert time.monotonic() - began >= 0.9  # the timer really waited
    assert done["runtimeStatus"] == "Completed"
    assert done["output"] >= 1.0  # replayed current_utc_datetime is the time the timer fired
    [fired] = [e for e in done["historyEvents"] if e["EventType"] == "TimerFired"]
    [created] = [e for e in done["historyEvents"] if e["EventType"] == "TimerCreated"]
    assert fired["TimerId"] == created["EventId"] and fired["FireAt"] == created["FireAt"]


def test_task_any_returns_the_timer_when_no_event_arrives(start, wait_done):
    done = wait_done(start("wait_with_timeout", 1))
    assert (done["runtimeStatus"], done["output"]) == ("Completed", "timed out")
    assert "EventRaised" not in _types(done)


def test_task_any_returns_the_event_when_it_beats_the_timer(host, client, start, wait_done, status):
    instance_id = start("wait_with_timeout", 30)
    eventually(lambda: "TimerCreated" in _types(status(instance_id)), what="the timer to be created")
    host.run(client.raise_event(instance_id, "Approval", {"by": "carol"}))
    done = wait_done(instance_id, timeout=5)  # long before the 30 s timer
    assert done["runtimeStatus"] == "Completed"
    assert json.loads(done["output"]["approved"]) == {"by": "carol"}
    assert "TimerFired" not in _types(done)


# The SDK parks an event nobody waits for yet in `deferred_tasks`, warning about a "duplicate" completion.
@pytest.mark.filterwarnings("ignore:Potential duplicate Task completion:UserWarning")
def test_event_raised_before_the_orchestrator_waits_is_not_lost(host, client, start, wait_done, status):
    instance_id = start("early_event", 0.5)
    host.run(client.raise_event(instance_id, "Go", {"n": 1}))  # while the slow activity still runs
    assert status(instance_id)["runtimeStatus"] in ("Pending", "Running")
    done = wait_done(instance_id)
    assert done["runtimeStatus"] == "Completed"
    assert json.loads(done["output"]) == {"n": 1}
    types = _types(done)
    assert types.index("EventRaised") < types.index("TaskCompleted")  # it arrived before the wait began


# ---------------------------------------------------------------- timer trigger


def test_timer_trigger_with_six_field_ncrontab_schedule_fires_every_second(host):
    [timer] = [t for t in host.host.index.timers if t.name == "every_second"]
    assert len(timer.trigger["schedule"].split()) == 6
    before = sample_app.calls.get("timer", 0)
    eventually(lambda: sample_app.calls.get("timer", 0) >= before + 2, timeout=5,
               what="two firings of every_second")
    request = sample_app.timer_requests[-1]
    assert isinstance(request, func.TimerRequest) and request.past_due is False


@pytest.mark.parametrize("key, name, status", [
    (None, "once_a_year", 401), ("function", "once_a_year", 401),  # running a function by hand is for admins
    ("master", "no_such_function", 404), ("master", "echo", 404),  # HTTP-triggered: call its route instead
], ids=["no key", "function key", "unknown", "http function"])
def test_a_function_not_run_by_hand_says_why(host, key, name, status):
    keys = {"function": FUNCTION_KEY, "master": MASTER_KEY}
    answer = Http(host.base_url, keys.get(key)).request("POST", f"/admin/functions/{name}", {"input": ""})
    assert answer[0] == status and answer[2]["error"]["message"] == {
        401: "Running a function by hand needs the master key.",
        404: "No timer-triggered function has this name."}[status]  # not the HTTP routes' 404
    time.sleep(0.2)
    assert sample_app.calls.get("yearly", 0) == 0


def test_a_timer_function_is_run_by_hand_with_the_master_key(host):
    """Azure's `POST /admin/functions/{name}`: 202, and the function runs now, as if its schedule were due."""
    answer = Http(host.base_url, MASTER_KEY).request("POST", "/admin/functions/Once_A_Year", {"input": ""})
    assert answer[0] == 202
    eventually(lambda: sample_app.calls.get("yearly", 0) == 1, timeout=5, what="the yearly timer run by hand")
