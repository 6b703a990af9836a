"""The job contract: status mapping, errors without tracebacks, idempotency keys, waits and paging."""
from __future__ import annotations

import base64
from datetime import datetime, timezone

import pytest

from shared.errors import BadRequest, Conflict
from shared.jobs import (OrchestrationSnapshot, check_same_request, decode_continuation, encode_continuation,
                         job_id_for, job_json, newest_first, page_of, parse_limit, parse_status_filter, parse_wait,
                         query_scope, request_fingerprint, validate_job_id)

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)


def snap(runtime: str, output=None, custom=None) -> OrchestrationSnapshot:
    return OrchestrationSnapshot("job-1", "offer_ingestion", runtime, T0, T0, custom, output)


@pytest.mark.parametrize("runtime,status", [
    ("Pending", "accepted"), ("Running", "processing"), ("ContinuedAsNew", "processing"),
    ("Suspended", "processing"), ("Completed", "done"), ("Failed", "failed"), ("Terminated", "canceled"),
])
def test_runtime_status_maps_to_job_status(runtime, status):
    assert job_json(snap(runtime))["status"] == status


def test_job_json_has_every_contract_field():
    job = job_json(snap("Running", custom={"current": 2, "total": 5, "message": "Processing page 2 of 5"}))
    assert set(job) >= {"job_id", "status", "created_at", "updated_at", "progress", "result", "error", "usage"}
    assert job["progress"] == {"current": 2, "total": 5, "message": "Processing page 2 of 5"}
    assert job["created_at"] == "2026-11-23T10:00:00Z"


def test_completed_envelope_splits_result_and_usage():
    job = job_json(snap("Completed", {"result": {"x": 1}, "usage": {"cost_usd": 0.01}}))
    assert job["result"] == {"x": 1} and job["usage"] == {"cost_usd": 0.01} and job["error"] is None


def test_completed_with_error_envelope_is_failed():
    job = job_json(snap("Completed", {"error": {"code": "model_refused", "message": "no"}, "usage": {}}))
    assert job["status"] == "failed" and job["error"]["code"] == "model_refused"


def test_failed_orchestration_error_keeps_cause_and_drops_traceback():
    output = ("Orchestrator function 'x' failed: Activity function 'parse' failed: [pdf_corrupt] The PDF is "
              "damaged \n Traceback (most recent call last):\n  File \"/secret/path.py\", line 1")
    error = job_json(snap("Failed", output))["error"]
    assert error == {"code": "pdf_corrupt", "message": "The PDF is damaged"}


def test_failed_without_code_gets_generic_code():
    error = job_json(snap("Failed", "Orchestrator function 'x' failed: kaput"))["error"]
    assert error["code"] == "job_failed" and "kaput" in error["message"]


def test_done_progress_is_complete():
    job = job_json(snap("Completed", {"result": 1}, {"current": 4, "total": 5}))
    assert job["progress"]["current"] == 5


def test_same_idempotency_key_gives_same_job_id_and_no_key_gives_new_ids():
    assert job_id_for("offer", "abc") == job_id_for("offer", "abc") != job_id_for("offer", "abd")
    assert job_id_for("offer", None) != job_id_for("offer", None)


@pytest.mark.parametrize("key", ["", "   ", "x" * 256])
def test_bad_idempotency_key_is_rejected(key):
    with pytest.raises(BadRequest):
        job_id_for("offer", key)


def test_same_key_with_other_body_is_conflict():
    stored = {"request": {"a": 1}, "fingerprint": request_fingerprint({"a": 1})}
    check_same_request(stored, request_fingerprint({"a": 1}))
    with pytest.raises(Conflict):
        check_same_request(stored, request_fingerprint({"a": 2}))


def test_fingerprint_ignores_key_order():
    assert request_fingerprint({"a": 1, "b": 2}) == request_fingerprint({"b": 2, "a": 1})


def test_wait_is_capped_and_validated():
    assert parse_wait(None, 25) == 0
    assert parse_wait("60", 25) == 25
    assert parse_wait("2.5", 25) == 2.5
    for bad in ("soon", "-1"):
        with pytest.raises(BadRequest):
            parse_wait(bad, 25)


def test_continuation_round_trips_and_rejects_garbage():
    scope = query_scope("jobs", {"status": "done", "limit": "2"}, ("status",))
    assert decode_continuation(encode_continuation(150, scope), scope) == 150
    assert decode_continuation(None, scope) == 0
    with pytest.raises(BadRequest):
        decode_continuation("not-a-token!", scope)


def test_a_continuation_serves_only_the_query_that_made_it():
    jobs = query_scope("jobs", {"status": "done", "limit": "2", "continuation": "x"}, ("status",))
    # limit, a cache-buster or a parameter a gateway adds may change from page to page
    assert query_scope("jobs", {"status": "done", "limit": "50", "_": "1765000000"}, ("status",)) == jobs
    token = encode_continuation(2, jobs)
    for other in (query_scope("messages", {"status": "done"}, ("status",)),
                  query_scope("jobs", {"status": "failed"}, ("status",)), query_scope("jobs", {}, ("status",))):
        with pytest.raises(BadRequest):
            decode_continuation(token, other)
    for forged in (f"o:-5:{jobs}", f"o: 3:{jobs}", f"o:1e3:{jobs}", "o:3"):  # hand-made, or without the mark
        with pytest.raises(BadRequest):
            decode_continuation(base64.urlsafe_b64encode(forged.encode()).decode(), jobs)


def test_pages_neither_skip_nor_repeat_when_items_are_deleted_or_added_between_them():
    jobs = [{"job_id": f"j{n:02}", "created_at": f"2026-12-08T00:00:{n:02}Z"} for n in range(10)]
    jobs.sort(key=newest_first, reverse=True)
    scope = query_scope("jobs", {}, ("status",))
    seen, token = [], None
    while True:  # the caller deletes each page after reading it; a new job comes after the first page
        page, token = page_of(jobs, 3, token, scope, key=newest_first)
        seen += [j["job_id"] for j in page]
        jobs = [j for j in jobs if j not in page]
        if len(seen) == 3:
            jobs.insert(0, {"job_id": "new", "created_at": "2026-12-08T00:01:00Z"})
        if token is None:
            break
    assert seen == [f"j{n:02}" for n in range(9, -1, -1)]
    with pytest.raises(BadRequest):
        page_of(jobs, 3, token or "eyJhZnRlciI6MX0", scope, key=newest_first)
    other = query_scope("jobs", {"status": "failed"}, ("status",))
    first, token = page_of(seen, 2, None, scope, key=lambda j: (j,))
    with pytest.raises(BadRequest):  # a token of another query
        page_of(seen, 2, token, other, key=lambda j: (j,))


def test_status_filter_and_limit():
    runtimes, wanted = parse_status_filter("done,canceled")
    assert set(runtimes) == {"Completed", "Terminated", "Canceled"} and wanted == {"done", "canceled"}
    # a job that completed with an error in its output is failed: `failed` asks for completed ones, too
    assert "Completed" in parse_status_filter("failed")[0]
    # a status named many times is asked for once: the host's URL stays short (260 of them once broke it)
    assert parse_status_filter(",".join(["processing"] * 1000 + ["done"] * 1000)) == parse_status_filter(
        "processing,done")
    with pytest.raises(BadRequest):
        parse_status_filter("finished")
    assert parse_limit("10") == 10
    with pytest.raises(BadRequest):
        parse_limit("0")


@pytest.mark.parametrize("job_id", ["", "a/b", "x" * 101, "../etc"])
def test_invalid_job_ids_are_rejected(job_id):
    with pytest.raises(BadRequest):
        validate_job_id(job_id)
