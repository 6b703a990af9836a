"""The Durable management API, through the real DurableOrchestrationClient and over plain HTTP."""
from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlparse

import pytest
import sample_app
from azure.durable_functions import EntityId, OrchestrationRuntimeStatus as Rt
from helpers import FUNCTION_KEY, MASTER_KEY, Http, eventually


def _settle(seconds: float = 0.3) -> None:
    """Short pause to let an activity already running finish before counting calls."""
    time.sleep(seconds)


def test_start_new_with_chosen_instance_id_and_get_status(host, client, wait_done):
    assert host.run(client.start_new("chain", "my-id", 2)) == "my-id"
    wait_done("my-id")
    status = host.run(client.get_status("my-id", show_input=True))
    assert status.instance_id == "my-id"
    assert status.name == "chain"
    assert status.runtime_status == Rt.Completed
    assert status.output == 2
    assert status.input_ == "2"  # the stored JSON text, as the extension returns it
    assert status.created_time is not None and status.last_updated_time >= status.created_time


def test_get_status_history_only_when_asked_and_results_only_with_history_output(host, client, wait_done):
    instance_id = host.run(client.start_new("chain", None, 2))
    wait_done(instance_id)
    plain = host.run(client.get_status(instance_id))
    assert getattr(plain, "historyEvents", None) is None

    without_output = host.run(client.get_status(instance_id, show_history=True)).historyEvents
    assert [e["EventType"] for e in without_output] == [
        "ExecutionStarted", "TaskScheduled", "TaskCompleted", "TaskScheduled", "TaskCompleted"]
    assert all("Result" not in e for e in without_output)

    with_output = host.run(client.get_status(instance_id, show_history=True, show_history_output=True))
    assert [e["Result"] for e in with_output.historyEvents if e["EventType"] == "TaskCompleted"] == [1, 2]


def test_get_status_of_unknown_instance_is_falsy(host, client):
    assert not host.run(client.get_status("no-such-instance"))


def test_start_new_of_unknown_orchestrator_raises_with_the_extension_message(host, client):
    with pytest.raises(Exception, match="The function 'nope' doesn't exist"):
        host.run(client.start_new("nope"))


def test_start_new_with_the_id_of_a_running_instance_is_rejected(host, client):
    host.run(client.start_new("wait_with_timeout", "busy", 30))
    with pytest.raises(Exception, match="already exists"):
        host.run(client.start_new("chain", "busy", 1))
    assert host.run(client.get_status("busy")).name == "wait_with_timeout"
    # In Azure the extension does the same only when host.json says so (a WhatsApp conversation must never be
    # replaced mid-turn by a start that followed a failed raise_event).
    host_json = json.loads((Path(__file__).resolve().parents[2] / "host.json").read_text())
    assert host_json["extensions"]["durableTask"]["overridableExistingInstanceStates"] == "NonRunningStates"


def test_get_status_all_and_get_status_by_filter_instances(host, client, wait_done, status):
    before = datetime.now(timezone.utc) - timedelta(seconds=1)
    host.run(client.start_new("chain", "done-1", 1))
    host.run(client.start_new("chain", "done-2", 1))
    host.run(client.start_new("wait_with_timeout", "waiting-1", 30))
    wait_done("done-1")
    wait_done("done-2")
    eventually(lambda: status("waiting-1")["runtimeStatus"] == "Running", what="waiting-1 to run")

    everything = host.run(client.get_status_all())
    assert {s.instance_id for s in everything} == {"done-1", "done-2", "waiting-1"}

    completed = host.run(client.get_status_by(runtime_status=[Rt.Completed]))
    assert sorted(s.instance_id for s in completed) == ["done-1", "done-2"]
    running = host.run(client.get_status_by(created_time_from=before, runtime_status=[Rt.Running]))
    assert [s.instance_id for s in running] == ["waiting-1"]
    by_prefix = host.run(client.get_status_by(instance_id_prefix="done-"))
    assert sorted(s.instance_id for s in by_prefix) == ["done-1", "done-2"]
    future = datetime.now(timezone.utc) + timedelta(hours=1)
    assert host.run(client.get_status_by(created_time_from=future)) == []
    assert host.run(client.get_status_by(created_time_to=before)) == []


def test_raise_event_wakes_a_waiting_orchestration(host, client, start, wait_done, status):
    instance_id = start("wait_with_timeout", 30)
    eventually(lambda: status(instance_id)["runtimeStatus"] == "Running", what="the orchestrator to wait")
    host.run(client.raise_event(instance_id, "Approval", "yes"))
    done = wait_done(instance_id)
    assert done["runtimeStatus"] == "Completed"
    assert done["output"] == {"approved": '"yes"'}  # the event data's JSON text, as in Azure


def test_raise_event_to_a_finished_instance_raises(host, client, start, wait_done):
    instance_id = start("chain", 1)
    wait_done(instance_id)
    with pytest.raises(Exception, match="is gone"):
        host.run(client.raise_event(instance_id, "Approval", True))
    with pytest.raises(Exception, match="No instance"):
        host.run(client.raise_event("missing", "Approval", True))


def test_terminated_orchestration_runs_no_more_activities(host, client, start, wait_done):
    instance_id = start("ticker", {"n": 40, "key": "t"})
    eventually(lambda: sample_app.calls.get("t", 0) >= 2, what="two ticks")
    host.run(client.terminate(instance_id, "enough ticks"))
    done = wait_done(instance_id)
    assert (done["runtimeStatus"], done["output"]) == ("Terminated", "enough ticks")
    _settle()
    ticks = sample_app.calls["t"]
    assert ticks < 40
    _settle(0.5)  # a running ticker would have ticked several more times by now
    assert sample_app.calls["t"] == ticks
    assert wait_done(instance_id)["runtimeStatus"] == "Terminated"


def test_suspended_orchestration_makes_no_progress_until_resumed(host, client, start, wait_done, status):
    instance_id = start("ticker", {"n": 8, "key": "s"})
    eventually(lambda: sample_app.calls.get("s", 0) >= 1, what="the first tick")
    host.run(client.suspend(instance_id, "hold on"))
    assert status(instance_id)["runtimeStatus"] == "Suspended"
    _settle()
    ticks = sample_app.calls["s"]
    _settle(0.5)
    assert sample_app.calls["s"] == ticks < 8
    assert status(instance_id)["runtimeStatus"] == "Suspended"

    host.run(client.resume(instance_id, "go on"))
    done = wait_done(instance_id)
    assert (done["runtimeStatus"], done["output"]) == ("Completed", 8)
    assert sample_app.calls["s"] == 8


def test_purge_instance_history_deletes_one_finished_instance(host, client, start, wait_done):
    instance_id = start("chain", 1)
    wait_done(instance_id)
    assert host.run(client.purge_instance_history(instance_id)).instances_deleted == 1
    assert not host.run(client.get_status(instance_id))
    assert host.run(client.purge_instance_history(instance_id)).instances_deleted == 0


def test_purge_instance_history_by_deletes_only_matching_instances(host, client, start, wait_done):
    since = datetime.now(timezone.utc) - timedelta(seconds=1)
    for instance_id in ("p-1", "p-2"):
        start("chain", 1, instance_id)
        wait_done(instance_id)
    start("catches_failure", "p", "p-3")
    start("crashes", None, "p-failed")
    start("wait_with_timeout", 30, "p-running")
    wait_done("p-3")
    wait_done("p-failed")
    result = host.run(client.purge_instance_history_by(since, runtime_status=[Rt.Completed]))
    assert result.instances_deleted == 3
    assert {s.instance_id for s in host.run(client.get_status_all())} == {"p-failed", "p-running"}
    # nothing left that matches: the extension answers 404, the client reports 0
    assert host.run(client.purge_instance_history_by(since, runtime_status=[Rt.Completed])).instances_deleted == 0


def test_rewind_reruns_a_failed_orchestration_to_completion(host, client, start, wait_done):
    instance_id = start("rewindable", "rw")
    failed = wait_done(instance_id)
    assert failed["runtimeStatus"] == "Failed"
    assert "first call of rw fails" in failed["output"]

    host.run(client.rewind(instance_id, "try again"))
    done = wait_done(instance_id)
    assert (done["runtimeStatus"], done["output"]) == ("Completed", [1, "ok on call 2"])
    # the activity that succeeded before the failure was not run again
    assert sample_app.calls["rw-before"] == 1
    assert sample_app.calls["rw"] == 2


def test_rewind_of_an_instance_that_did_not_fail_raises(host, client, start, wait_done):
    instance_id = start("chain", 1)
    wait_done(instance_id)
    with pytest.raises(Exception, match="only supported on failed orchestration instances"):
        host.run(client.rewind(instance_id, "no reason"))
    assert host.run(client.get_status(instance_id)).runtime_status == Rt.Completed


def test_wait_for_completion_returns_200_with_the_output_when_done(http):
    code, headers, body = http.request("POST", "/api/wait/chain", 3)
    assert (code, body) == (200, 3)
    assert headers["Content-Type"].startswith("application/json")


def test_wait_for_completion_returns_500_with_the_status_when_the_orchestration_fails(http):
    code, _, body = http.request("POST", "/api/wait/crashes", 0)
    assert code == 500
    assert body["runtimeStatus"] == "Failed"
    assert "kaput in the orchestrator" in body["output"]


def test_wait_for_completion_returns_202_check_status_response_on_timeout(host, http):
    code, headers, body = http.request("POST", "/api/wait/wait_with_timeout?timeout=300", 30)
    assert code == 202
    instance_id = body["id"]
    assert headers["Location"] == body["statusQueryGetUri"]
    # the management URLs point at the public webhook path of this host and carry the key they need
    location = urlparse(headers["Location"])
    assert location.path == f"/runtime/webhooks/durabletask/instances/{instance_id}"
    code, _, status = Http(host.base_url, key=None).request("GET", f"{location.path}?{location.query}")
    assert (code, status["runtimeStatus"]) == (202, "Running")
    assert set(body) >= {"sendEventPostUri", "terminatePostUri", "purgeHistoryDeleteUri", "rewindPostUri",
                         "suspendPostUri", "resumePostUri"}


def test_client_signal_entity_then_read_entity_state(host, client):
    entity = EntityId("Counter", "client-1")
    assert host.run(client.read_entity_state(entity)).entity_exists is False
    host.run(client.signal_entity(entity, "add", 100))
    host.run(client.signal_entity(entity, "add", 16))
    state = eventually(lambda: (r := host.run(client.read_entity_state(entity))).entity_state == 116 and r,
                       what="both signals to be applied")
    assert state.entity_exists is True
    host.run(client.signal_entity(entity, "reset"))  # no input: the SDK sends no body
    eventually(lambda: host.run(client.read_entity_state(entity)).entity_state == 0, what="the reset")


# ---------------------------------------------------------------- the HTTP API itself


def test_management_api_on_rpc_listener_needs_no_key(rpc, start, wait_done):
    instance_id = start("chain", 1)
    wait_done(instance_id)
    code, _, body = rpc.request("GET", f"/instances/{instance_id}")
    assert (code, body["output"]) == (200, 1)


def test_public_management_api_needs_the_master_key(host, start, status):
    instance_id = start("wait_with_timeout", 30)
    path = f"/runtime/webhooks/durabletask/instances/{instance_id}"
    for key in (None, FUNCTION_KEY, "wrong-key"):
        for method, url in (("GET", path), ("POST", f"{path}/terminate?reason=x")):
            code, headers, body = Http(host.base_url, key=key).request(method, url)
            assert code == 401 and headers["Content-Type"].startswith("application/json") and body["error"]
    assert status(instance_id)["runtimeStatus"] in ("Pending", "Running")  # not terminated
    code, _, body = Http(host.base_url, key=MASTER_KEY).request("GET", path)
    assert (code, body["instanceId"]) == (202, instance_id)
    code, _, body = Http(host.base_url, key=None).request("GET", f"{path}?code={MASTER_KEY}")
    assert (code, body["instanceId"]) == (202, instance_id)


def test_http_start_with_json_body_on_the_public_api(host, wait_done):
    admin = Http(host.base_url, key=MASTER_KEY)
    code, headers, body = admin.request("POST", "/runtime/webhooks/durabletask/orchestrators/chain/via-http", 2)
    assert (code, body["id"]) == (202, "via-http")
    assert headers["Location"] == body["statusQueryGetUri"]
    assert wait_done("via-http")["output"] == 2


def test_raise_event_with_bad_content_type_or_body_is_400_and_not_delivered(host, client, rpc, start, wait_done):
    instance_id = start("wait_with_timeout", 30)
    code, _, body = rpc.request("POST", f"/instances/{instance_id}/raiseEvent/Approval", raw=b'"early"',
                                headers={"content-type": "text/plain"})
    assert code == 400
    assert "application/json" in body["Message"]
    code, _, body = rpc.request("POST", f"/instances/{instance_id}/raiseEvent/Approval", raw=b"{not json",
                                headers={"content-type": "application/json"})
    assert code == 400 and body["Message"]
    # the orchestrator takes the first Approval it gets: it must be this one
    host.run(client.raise_event(instance_id, "Approval", "valid"))
    assert wait_done(instance_id)["output"] == {"approved": '"valid"'}


@pytest.mark.parametrize("query", ["createdTimeFrom=yesterday", "createdTimeTo=2024-13-45T00:00:00Z",
                                   "top=many"])
def test_malformed_query_filters_are_400(rpc, query):
    code, _, body = rpc.request("GET", f"/instances/?{query}")
    assert code == 400
    assert body["Message"]


def test_malformed_start_body_is_400(rpc):
    code, _, body = rpc.request("POST", "/orchestrators/chain", raw=b"{not json",
                                headers={"content-type": "application/json"})
    assert code == 400
    assert body["Message"]


def test_unknown_management_path_is_404_json(rpc):
    code, _, body = rpc.request("GET", "/nothing/here")
    assert code == 404 and body["Message"]
