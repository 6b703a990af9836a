"""Document vision over real HTTP on devhost + Azurite: per-page readings merged, progress, faults, restarts."""
from __future__ import annotations

import base64
import io
import json
import re
import time
import uuid
from pathlib import Path

import pytest

from tests.support.fake_openai import FakeOpenAI
from tests.support.http import Http, wait_until
from tests.support.processes import FUNCTION_KEY, MASTER_KEY, Azurite, DevhostProcess, free_port

FIXTURE = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "documents" / "rental_agreement_3p"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())
REQUEST = json.loads((FIXTURE / "request.json").read_text())
PAGE_ANSWERS = {
    1: {"text": "RENTAL AGREEMENT Between: Harbor View Properties LLC (Landlord) and: Maria Gonzalez (Tenant)",
        "blocks": [{"kind": "heading", "text": "RENTAL AGREEMENT"}], "document_type": "Rental agreement",
        "parties": ["Harbor View Properties LLC", "Maria Gonzalez"],
        "fields": [{"name": "term_months", "value": "12", "kind": "number"},
                   {"name": "start_date", "value": "2027-01-01", "kind": "date"}], "signatures": []},
    2: {"text": "2. RENT Monthly rent: USD 2,350.00 due on the 1st of each month. Security deposit: USD 2,350.00",
        "blocks": [], "document_type": None, "parties": [],
        "fields": [{"name": "monthly_rent", "value": "2350.00", "kind": "amount"},
                   {"name": "currency", "value": "USD", "kind": "currency"},
                   {"name": "deposit", "value": "2,350.00", "kind": "amount"}], "signatures": []},
    3: {"text": "3. SIGNATURES Landlord: (signed) Tenant: (signed)", "blocks": [], "document_type": None,
        "parties": ["Maria Gonzalez"], "fields": [],
        "signatures": [{"signer": "Landlord", "signed": True, "date": "2026-11-20"},
                       {"signer": "Tenant", "signed": True, "date": "2026-11-21"}]},
}


def page_of(body: dict) -> int:
    system = next(m["content"] for m in body["messages"] if m["role"] == "system")
    return int(re.search(r"This is page (\d+) of", system).group(1))


def answer_by_page(body: dict) -> dict:
    return {"json": PAGE_ANSWERS.get(page_of(body), {"text": f"page {page_of(body)}"})}


@pytest.fixture()
def reset(fake):
    fake.script.clear()
    fake.requests.clear()
    fake.latency = 0.0
    fake.default = answer_by_page
    return fake


def _devhost(azurite: Azurite, fake: FakeOpenAI | None, **env: str) -> DevhostProcess:
    base = {"DEVHOST_RPC_PORT": str(free_port()), "AI_RETRY_BASE_SECONDS": "0.2", "AI_SDK_MAX_RETRIES": "0",
            "AI_MAX_ATTEMPTS": "2", "AI_TIMEOUT_SECONDS": "10"}
    if fake is not None:
        base.update(AI_PROVIDER="openai", OPENAI_BASE_URL=fake.base_url, OPENAI_API_KEY="sk-fake")
    else:
        base.update(AI_PROVIDER="offline")
    return DevhostProcess(azurite.connection_string, {**base, **env}).start()


@pytest.fixture(scope="module")
def api(azurite_module, fake):
    host = _devhost(azurite_module, fake)
    yield Http(host.base_url, FUNCTION_KEY)
    host.stop()


@pytest.fixture(scope="module")
def offline_api(azurite_module):
    host = _devhost(azurite_module, None)
    yield Http(host.base_url, FUNCTION_KEY)
    host.stop()


def finished(http: Http, task_id: str, timeout: float = 60) -> dict:
    def check():
        status = http.request("GET", f"/api/task-status/{task_id}?wait=5")[2]
        return status if status["state"] in ("SUCCESS", "PARTIAL", "FAILURE") else None

    return wait_until(check, timeout=timeout, interval=0.1)


def assert_matches_expected(result: dict) -> None:
    for key, value in EXPECTED.items():
        assert result[key] == value, (key, result[key], value)


def test_seed_request_is_queued_and_read_page_by_page_into_the_expected_result(api, reset):
    request = {**REQUEST, "job_id": f"doc-{uuid.uuid4().hex[:8]}"}
    status, headers, queued = api.request("POST", "/api/process-document", request)
    assert status == 202, queued
    assert queued["status"] == "queued" and queued["job_id"] == request["job_id"]
    assert queued["user_id"] == "user-42" and queued["num_pages"] == 3 and queued["file_type"] == "image/png"
    assert queued["status_endpoint"] == f"/api/job-status/{request['job_id']}"
    assert queued["task_endpoint"] == f"/api/task-status/{queued['task_id']}" == headers["Location"]
    done = finished(api, queued["task_id"])
    assert done["state"] == "SUCCESS" and done["progress"] == 100, done
    assert_matches_expected(done["result"])
    assert [p["page"] for p in done["result"]["page_results"]] == [1, 2, 3]
    assert done["result"]["text"].startswith("RENTAL AGREEMENT")
    calls = reset.chat_requests()
    assert sorted(page_of(c["body"]) for c in calls) == [1, 2, 3]
    for call in calls:
        user = next(m for m in call["body"]["messages"] if m["role"] == "user")
        assert [p["type"] for p in user["content"] if p["type"] == "image_url"] == ["image_url"]
        assert call["body"]["response_format"]["json_schema"]["name"] == "PageExtraction"
    assert done["usage"]["input_tokens"] == 360
    by_job = api.request("GET", f"/api/job-status/{request['job_id']}")[2]
    assert by_job["task_id"] == queued["task_id"] and by_job["state"] == "SUCCESS"


def test_the_largest_fallback_text_in_cyrillic_is_a_job_that_finishes(api, reset):
    """200,000 characters are allowed; escaped in the job's input each Cyrillic one takes 7: once a 500 (and at
    30,000 a job that never finished: its steps could not be stored)."""
    request = {**REQUEST, "job_id": f"doc-{uuid.uuid4().hex[:8]}", "fallback_text": "Ж" * 200_000}
    status, _, queued = api.request("POST", "/api/process-document", request)
    assert status == 202, queued
    assert finished(api, queued["task_id"])["state"] == "SUCCESS"


def test_pdf_upload_reads_the_text_layer_and_matches_expected(api, reset):
    pdf = (FIXTURE / "agreement.pdf").read_bytes()
    status, _, queued = api.request("POST", "/api/process-document?wait=20", raw=pdf,
                                    headers={"content-type": "application/pdf"})
    assert status == 200 and queued["num_pages"] == 3 and queued["file_type"] == "application/pdf", queued
    assert_matches_expected(queued["result"])
    for call in reset.chat_requests():
        user = next(m for m in call["body"]["messages"] if m["role"] == "user")
        assert all(p["type"] == "text" for p in user["content"])  # the text layer, no rendering
    texts = " ".join(p["text"] for c in reset.chat_requests() for m in c["body"]["messages"]
                     if m["role"] == "user" for p in m["content"])
    assert "Monthly rent: USD 2,350.00" in texts


def test_same_caller_job_id_is_the_same_task_and_another_body_is_409(api, reset):
    request = {**REQUEST, "job_id": f"doc-{uuid.uuid4().hex[:8]}"}
    first = api.request("POST", "/api/process-document", request)[2]
    again = api.request("POST", "/api/process-document", request)[2]
    assert first["task_id"] == again["task_id"]
    status, _, body = api.request("POST", "/api/process-document", {**request, "fallback_text": "other"})
    assert status == 409 and body["error"]["code"] == "idempotency_key_reused"
    finished(api, first["task_id"])
    assert len(reset.chat_requests()) == 3


def test_a_page_that_keeps_failing_leaves_the_task_partial_with_its_fallback_text(api, reset):
    reset.default = lambda body: {"status": 400} if page_of(body) == 2 else answer_by_page(body)
    request = {**REQUEST, "job_id": f"doc-{uuid.uuid4().hex[:8]}"}
    queued = api.request("POST", "/api/process-document", request)[2]
    done = finished(api, queued["task_id"])
    assert done["state"] == "PARTIAL" and done["failed_pages"] == [2], done
    page = done["result"]["page_results"][1]
    assert page["failed"] is True and page["error"]["code"] == "ai_bad_request"
    assert page["text"] == "" and page["source"] == "fallback_text"
    assert done["result"]["text"].count(REQUEST["fallback_text"]) == 1  # the whole document's text, given once
    assert done["result"]["parties"] == EXPECTED["parties"] and done["result"]["signed"] is True
    assert sum(1 for c in reset.chat_requests() if page_of(c["body"]) == 2) == 1  # permanent: not retried


def test_a_canceled_document_stops_reading_its_pages_and_a_deleted_one_leaves_no_step_behind(azurite_module, reset):
    """Terminating a job does not reach the sub-orchestrations that read its pages: cancel terminates them, or a
    page the model keeps failing would be retried (and paid) after the cancel; delete purges them."""
    reset.default = {"status": 500}
    host = _devhost(azurite_module, reset, AI_MAX_ATTEMPTS="8", AI_RETRY_BASE_SECONDS="1")
    try:
        http = Http(host.base_url, FUNCTION_KEY)
        queued = http.request("POST", "/api/process-document", {**REQUEST, "job_id": f"doc-{uuid.uuid4().hex[:8]}"})[2]
        task_id = queued["task_id"]
        wait_until(lambda: len(reset.chat_requests()) >= 3, timeout=30, interval=0.05)  # each page's first try
        status, _, canceled = http.request("POST", f"/api/jobs/{task_id}/cancel")
        assert status == 200 and canceled["status"] == "canceled", canceled
        at_cancel = len(reset.chat_requests())
        time.sleep(5)  # retries were due after about 1, 2 and 4 s
        assert len(reset.chat_requests()) - at_cancel <= 3  # at most the tries under way at the cancel
        assert not [j for j in http.request("GET", "/api/jobs?limit=500")[2]["jobs"] if j["type"] != "document_vision"]
        steps = [f"{task_id}:retried_activity-{n}" for n in (1, 2, 3)]
        management = Http(host.base_url, MASTER_KEY)
        path = "/runtime/webhooks/durabletask/instances/{}"
        assert all(management.request("GET", path.format(s))[2]["runtimeStatus"] == "Terminated" for s in steps)
        assert http.request("DELETE", f"/api/jobs/{task_id}")[0] == 204
        assert all(management.request("GET", path.format(s))[0] == 404 for s in steps)
    finally:
        host.stop()


def test_progress_rises_page_by_page_with_the_seed_message(azurite_module, reset):
    reset.latency = 0.4
    host = _devhost(azurite_module, reset, DOCUMENT_PAGE_PARALLELISM="1")
    try:
        http = Http(host.base_url, FUNCTION_KEY)
        page = base64.b64encode((FIXTURE / "page-1.png").read_bytes()).decode()
        queued = http.request("POST", "/api/process-document", {"images_base64": [page] * 5, "num_pages": 5})[2]
        seen = []

        def poll():
            status = http.request("GET", f"/api/task-status/{queued['task_id']}")[2]
            seen.append((status["current"], status["status"], status["state"]))
            return status["state"] == "SUCCESS"

        wait_until(poll, timeout=60, interval=0.05)
    finally:
        host.stop()
    currents = [c for c, _, _ in seen]
    assert currents == sorted(currents) and currents[-1] == 5
    assert set(range(0, 5)) <= set(currents), currents
    for current, message, state in seen:
        if state == "PROGRESS":
            assert message == (f"Processing page {current + 1} of 5" if current < 5 else "Processed 5 of 5 pages")


def test_kill_9_mid_document_finishes_after_restart_without_rereading_done_pages(azurite_module, reset):
    reset.latency = 1.0
    env = {"DOCUMENT_PAGE_PARALLELISM": "2"}
    first = _devhost(azurite_module, reset, **env)
    http = Http(first.base_url, FUNCTION_KEY)
    page = base64.b64encode((FIXTURE / "page-1.png").read_bytes()).decode()
    queued = http.request("POST", "/api/process-document", {"images_base64": [page] * 6})[2]
    wait_until(lambda: http.request("GET", f"/api/task-status/{queued['task_id']}")[2]["current"] >= 2,
               timeout=30, interval=0.05)
    first.kill()
    done_before = {page_of(c["body"]) for c in reset.chat_requests()}
    second = first.again().start()
    try:
        done = finished(Http(second.base_url, FUNCTION_KEY), queued["task_id"], timeout=90)
    finally:
        second.stop()
    assert done["state"] == "SUCCESS" and done["result"]["pages"] == 6
    requests = [page_of(c["body"]) for c in reset.chat_requests()]
    assert sorted(set(requests)) == [1, 2, 3, 4, 5, 6]
    finished_pages = [n for n in done_before if requests.count(n) >= 1]
    assert len(finished_pages) >= 2
    # pages whose result was recorded before the kill were read once; pages in flight may be read again
    assert sum(requests.count(n) - 1 for n in range(1, 7)) <= 2, requests


def test_offline_provider_reads_the_scans_with_local_ocr(offline_api):
    request = {**REQUEST, "job_id": f"doc-{uuid.uuid4().hex[:8]}"}
    queued = offline_api.request("POST", "/api/process-document", request)[2]
    done = finished(offline_api, queued["task_id"], timeout=120)
    assert done["state"] == "SUCCESS", done
    text = done["result"]["text"]
    for needle in ("Harbor View Properties", "Maria Gonzalez", "2,350"):
        assert needle in text, text


def _pdf(encrypted: bool = False, pages: int = 1) -> bytes:
    import pypdf

    writer = pypdf.PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(200, 200)
    if encrypted:
        writer.encrypt("secret")
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


PNG = (FIXTURE / "page-1.png").read_bytes()
BAD = [
    ("invalid base64", {"images_base64": ["***not base64***"]}, 400, "invalid_base64"),
    ("a non-image", {"images_base64": [_b64(b"just some text, not a picture")]}, 415, "unsupported_media_type"),
    ("a truncated image", {"images_base64": [_b64(PNG[:200])]}, 422, "image_corrupt"),
    ("a PDF with 0 pages", {"file_base64": _b64(_pdf(pages=0))}, 422, "pdf_empty"),
    ("an encrypted PDF", {"file_base64": _b64(_pdf(encrypted=True))}, 422, "pdf_encrypted"),
    ("too many pages", {"images_base64": [_b64(PNG)] * 51}, 422, "too_many_pages"),
    ("an empty list", {"images_base64": []}, 422, "no_pages"),
    ("num_pages that disagrees", {"images_base64": [_b64(PNG)], "num_pages": 3}, 422, "num_pages_mismatch"),
    ("num_pages true", {"images_base64": [_b64(PNG)], "num_pages": True}, 422, "invalid_request"),
    ("nothing", {"user_id": "u"}, 400, "empty_request"),
]


@pytest.mark.parametrize("name,body,status,code", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_a_4xx_json_error_and_starts_no_job(api, reset, name, body, status, code):
    before = len(api.request("GET", "/api/jobs?limit=500")[2]["jobs"])
    got, _, answer = api.request("POST", "/api/process-document", body)
    assert (got, answer["error"]["code"]) == (status, code), answer
    assert len(api.request("GET", "/api/jobs?limit=500")[2]["jobs"]) == before
    assert reset.chat_requests() == []


def test_unknown_task_and_job_are_404(api):
    assert api.request("GET", "/api/task-status/doc-unknown")[0] == 404
    status, _, body = api.request("GET", "/api/job-status/never-sent")
    assert status == 404 and "'never-sent'" in body["error"]["message"]  # the id the caller knows


def test_the_status_endpoint_of_a_document_sent_without_a_job_id_answers(api, reset):
    request = {k: v for k, v in REQUEST.items() if k != "job_id"}
    status, _, queued = api.request("POST", "/api/process-document", request)
    assert status == 202 and queued["job_id"] == queued["task_id"], queued
    done = finished(api, queued["task_id"])
    by_job = api.request("GET", queued["status_endpoint"])
    assert by_job[0] == 200 and by_job[2]["state"] == done["state"] == "SUCCESS"


def test_a_document_sent_again_after_its_cancel_says_canceled_not_processed(api, reset):
    reset.latency = 2.0
    request = {**REQUEST, "job_id": f"doc-{uuid.uuid4().hex[:8]}"}
    queued = api.request("POST", "/api/process-document", request)[2]
    assert api.request("POST", f"/api/jobs/{queued['task_id']}/cancel")[0] == 200
    again = api.request("POST", "/api/process-document", request)[2]
    assert (again["status"], again["message"], again["state"]) == (
        "canceled", "Document processing was canceled", "FAILURE"), again


def test_the_document_routes_see_no_other_kind_of_job(api, reset):
    offer = api.request("POST", "/api/ingest", {"text": "Offer: 3 chairs at 5 EUR"})[2]
    assert api.request("GET", f"/api/task-status/{offer['job_id']}")[0] == 404
    document = api.request("POST", "/api/process-document", {**REQUEST, "job_id": f"doc-{uuid.uuid4().hex[:8]}"})[2]
    assert api.request("GET", f"/api/result/{document['task_id']}")[0] == 404  # the offers' seed route
