"""The jobs API and the self-test of the real function_app, on an in-memory devhost over HTTP."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from helpers import FUNCTION_KEY
from tests.support.http import Http, wait_until

KEY = FUNCTION_KEY


@pytest.fixture(scope="module")
def api(app_http):
    return app_http


def _start(api: Http, **headers) -> dict:
    status, response_headers, job = api.request("POST", "/api/selftest", headers=headers)
    assert status == 202, job
    assert response_headers["Location"] == f"/api/jobs/{job['job_id']}"
    assert response_headers["Retry-After"] == "1"
    return job


def test_selftest_answers_202_with_the_job_json_and_finishes_done(api):
    job = _start(api)
    assert job["status"] in ("accepted", "processing") and job["type"] == "selftest_pipeline"
    assert set(job) >= {"job_id", "status", "created_at", "updated_at", "progress", "result", "error", "usage"}
    done = wait_until(lambda: (j := api.request("GET", f"/api/jobs/{job['job_id']}")[2])["status"] == "done"
                      and j, timeout=15)
    assert done["result"]["ok"] is True and done["progress"]["message"] == "Done"


def test_wait_returns_the_finished_job_in_one_call(api):
    status, headers, job = api.request("POST", "/api/selftest?wait=10")
    assert status == 200 and job["status"] == "done" and "Retry-After" not in headers


def test_short_wait_still_answers_202(api):
    status, _, job = api.request("POST", "/api/selftest?wait=0.1")
    assert status == 202 and job["status"] in ("accepted", "processing")


def test_same_idempotency_key_concurrently_gives_one_job(api):
    with ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(lambda _: api.request("POST", "/api/selftest", headers={"Idempotency-Key": "k-1"}),
                                range(5)))
    ids = {job["job_id"] for _, _, job in answers}
    assert len(ids) == 1, answers
    assert all(status in (200, 202) for status, _, _ in answers)
    listed = api.request("GET", "/api/jobs?limit=500")[2]["jobs"]
    assert sum(1 for j in listed if j["job_id"] in ids) == 1


def test_unknown_job_is_404_and_malformed_id_is_400(api):
    status, _, body = api.request("GET", "/api/jobs/selftest-doesnotexist")
    assert status == 404 and body["error"]["code"] == "job_not_found"
    status, _, body = api.request("GET", "/api/jobs/bad%20id!")
    assert status == 400 and body["error"]["code"] == "invalid_job_id"


def test_list_filters_by_status_and_pages_with_continuation(api):
    for _ in range(3):
        api.request("POST", "/api/selftest?wait=10")
    status, _, page = api.request("GET", "/api/jobs?status=done&limit=2")
    assert status == 200 and len(page["jobs"]) == 2 and page["continuation"]
    assert {j["status"] for j in page["jobs"]} == {"done"}
    _, _, rest = api.request("GET", f"/api/jobs?status=done&limit=2&continuation={page['continuation']}")
    assert not {j["job_id"] for j in rest["jobs"]} & {j["job_id"] for j in page["jobs"]}
    _, _, other = api.request("GET", f"/api/jobs?status=failed&continuation={page['continuation']}")
    assert other["error"]["code"] == "invalid_continuation"  # a token of another query
    for query in ("status=finished", "limit=0", "limit=abc", "continuation=%%%"):
        status, _, body = api.request("GET", f"/api/jobs?{query}")
        assert status == 400 and body["error"]["code"].startswith("invalid_"), query


def test_cancel_terminates_a_running_job_and_refuses_a_finished_one(api):
    job = _start(api)
    status, _, canceled = api.request("POST", f"/api/jobs/{job['job_id']}/cancel")
    assert status in (200, 202)
    final = wait_until(lambda: (j := api.request("GET", f"/api/jobs/{job['job_id']}")[2])["status"] == "canceled"
                       and j, timeout=10)
    assert final["error"]["code"] == "canceled"
    status, _, body = api.request("POST", f"/api/jobs/{job['job_id']}/cancel")
    assert status == 409 and body["error"]["code"] == "job_finished"


def test_delete_purges_only_finished_jobs(api):
    job = _start(api)
    status, _, body = api.request("DELETE", f"/api/jobs/{job['job_id']}")
    assert status == 409 and body["error"]["code"] == "job_not_finished"
    wait_until(lambda: api.request("GET", f"/api/jobs/{job['job_id']}?wait=5")[2]["status"] == "done", timeout=15)
    status, _, _ = api.request("DELETE", f"/api/jobs/{job['job_id']}")
    assert status == 204
    assert api.request("GET", f"/api/jobs/{job['job_id']}")[0] == 404


def test_routes_need_the_function_key(api):
    anonymous = Http(api.base_url, None)
    for method, path in (("GET", "/api/jobs"), ("POST", "/api/selftest"), ("GET", "/api/health")):
        status, _, body = anonymous.request(method, path)
        assert status == 401 and body["error"]["code"] == "unauthorized"
