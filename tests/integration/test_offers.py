"""Offer ingestion over real HTTP on devhost + Azurite, with a fake OpenAI server and with the offline provider."""
from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.http import Http, wait_until
from tests.support.processes import FUNCTION_KEY, Azurite, DevhostProcess, free_port
from tests.support.receiver import Receiver

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "offers"
SECRET = "whsec_" + base64.b64encode(b"integration-callback-secret").decode()
CASES = ["whatsapp_de_text", "whatsapp_en_terse", "email_fr_body", "email_en_pdf_attachment", "docx_it_table",
         "scan_es_image", "email_not_an_offer"]
DESCRIPTIVE = {"case", "note", "source", "expect_warning_on"}


def expected(case: str) -> dict:
    return json.loads((FIXTURES / case / "expected.json").read_text())


def model_answer(case: str) -> dict:
    """What a good model returns for the case: the expected fields, in the Offer schema."""
    fields = {k: v for k, v in expected(case).items() if k not in DESCRIPTIVE}
    return {"is_offer": fields.pop("is_offer", True), **fields}


def assert_matches(actual, wanted, path: str = "offer") -> None:
    """Every field the fixture states must be there with that value; extra fields may be null."""
    if isinstance(wanted, dict):
        for key, value in wanted.items():
            assert key in actual, f"{path}.{key} missing"
            assert_matches(actual[key], value, f"{path}.{key}")
    elif isinstance(wanted, list):
        assert len(actual) == len(wanted), f"{path}: {len(actual)} entries, expected {len(wanted)}"
        for i, (got, want) in enumerate(zip(actual, wanted)):
            assert_matches(got, want, f"{path}[{i}]")
    else:
        assert actual == wanted, f"{path}: {actual!r} != {wanted!r}"


def send(http: Http, case: str, *, headers: dict | None = None, query: str = "") -> tuple[int, dict, dict]:
    """Each case the way a Make.com scenario would send it."""
    folder = FIXTURES / case
    headers = dict(headers or {})
    if case.startswith("whatsapp"):
        return http.request("POST", f"/api/ingest{query}", {"text": (folder / "message.txt").read_text(),
                                                             "source": "whatsapp"}, headers=headers)
    if case in ("email_fr_body", "email_en_pdf_attachment", "email_not_an_offer"):
        name = "mail.eml" if case == "email_not_an_offer" else "offer.eml"
        return http.request("POST", f"/api/ingest?source=email{query.replace('?', '&')}",
                            raw=(folder / name).read_bytes(), headers={"content-type": "message/rfc822", **headers})
    if case == "docx_it_table":
        boundary = uuid.uuid4().hex
        data = (folder / "offer.docx").read_bytes()
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"source\"\r\n\r\ndocument\r\n"
                f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"offer.docx\"\r\n"
                "Content-Type: application/vnd.openxmlformats-officedocument.wordprocessingml.document\r\n\r\n"
                ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
        return http.request("POST", f"/api/ingest{query}", raw=body,
                            headers={"content-type": f"multipart/form-data; boundary={boundary}", **headers})
    if case == "scan_es_image":
        image = base64.b64encode((folder / "quote.png").read_bytes()).decode()
        return http.request("POST", f"/api/ingest{query}", {"source": "document", "file": {
            "name": "quote.png", "content_type": "image/png", "content_base64": image}}, headers=headers)
    raise ValueError(case)


def finished(http: Http, job_id: str, timeout: float = 60) -> dict:
    def check():
        status, _, job = http.request("GET", f"/api/result/{job_id}?wait=5")
        return job if job["status"] in ("done", "failed", "canceled") else None

    return wait_until(check, timeout=timeout, interval=0.1)


def _devhost(azurite: Azurite, **env: str) -> DevhostProcess:
    base = {"DEVHOST_RPC_PORT": str(free_port()), "CALLBACK_ALLOWED_HOSTS": "127.0.0.1",
            "CALLBACK_SIGNING_SECRET": SECRET, "AI_RETRY_BASE_SECONDS": "0.2", "AI_SDK_MAX_RETRIES": "0",
            "AI_MAX_ATTEMPTS": "3", "AI_TIMEOUT_SECONDS": "2", "CALLBACK_MAX_ATTEMPTS": "4"}
    return DevhostProcess(azurite.connection_string, {**base, **env}).start()


@pytest.fixture(scope="module")
def openai_api(azurite_module, fake):
    host = _devhost(azurite_module, AI_PROVIDER="openai", OPENAI_BASE_URL=fake.base_url, OPENAI_API_KEY="sk-fake",
                    OPENAI_MODEL="gpt-4o-mini")
    yield Http(host.base_url, FUNCTION_KEY)
    host.stop()


@pytest.fixture(scope="module")
def offline_api(azurite_module):
    host = _devhost(azurite_module, AI_PROVIDER="offline")
    yield Http(host.base_url, FUNCTION_KEY)
    host.stop()


@pytest.fixture()
def reset(fake):
    fake.script.clear()
    fake.requests.clear()
    fake.default = {"status": 500}
    return fake


def _user_text(request: dict) -> str:
    user = next(m for m in request["body"]["messages"] if m["role"] == "user")
    return " ".join(p.get("text", "") for p in user["content"] if p["type"] == "text")


SNIPPETS = {"whatsapp_de_text": "Edelstahlschrauben M8x40", "whatsapp_en_terse": "A4 copy paper",
            "email_fr_body": "Palette bois EUR", "email_en_pdf_attachment": "Servo motor SM-40",
            "docx_it_table": "Plafoniera LED 24W", "email_not_an_offer": "Packaging Expo"}


@pytest.mark.parametrize("case", CASES)
def test_fixture_offer_through_the_model_matches_expected(openai_api, reset, case):
    reset.script.append({"json": model_answer(case)})
    status, headers, job = send(openai_api, case)
    assert status == 202, job
    assert job["status"] == "accepted" and headers["Location"] == f"/api/result/{job['job_id']}"
    done = finished(openai_api, job["job_id"])
    assert done["status"] == "done", (done["error"], [r["body"]["messages"][-1] for r in reset.chat_requests()])

    [call] = reset.chat_requests()
    body = call["body"]
    assert body["model"] == "gpt-4o-mini"
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["name"] == "Offer"
    assert "total_gross" in body["response_format"]["json_schema"]["schema"]["properties"]
    if case == "scan_es_image":
        user = next(m for m in body["messages"] if m["role"] == "user")
        assert any(p["type"] == "image_url" and p["image_url"]["url"].startswith("data:image/png;base64,")
                   for p in user["content"])
    else:
        assert SNIPPETS[case] in _user_text(call)

    offer, want = done["data"], expected(case)
    assert offer == done["result"]
    assert_matches(offer, {k: v for k, v in want.items() if k not in DESCRIPTIVE})
    for field in want.get("expect_warning_on", []):
        assert any(w.startswith(field) for w in offer["warnings"]), offer["warnings"]
    if case != "whatsapp_de_text":
        assert offer["warnings"] == [], offer["warnings"]
    assert done["usage"]["input_tokens"] == 120 and done["usage"]["output_tokens"] == 40
    assert done["usage"]["cost_usd"] > 0 and done["usage"]["calls"][0]["model"] == "gpt-4o-mini"


def test_pdf_alone_is_read_from_its_text_layer(openai_api, reset):
    reset.script.append({"json": model_answer("email_en_pdf_attachment")})
    pdf = (FIXTURES / "email_en_pdf_attachment" / "Q-55120.pdf").read_bytes()
    status, _, job = openai_api.request("POST", "/api/ingest", raw=pdf, headers={"content-type": "application/pdf"})
    assert status == 202, job
    done = finished(openai_api, job["job_id"])
    assert done["status"] == "done" and done["data"]["total_gross"] == 7544.52
    assert "Net total: GBP 6,287.10" in _user_text(reset.chat_requests()[0])


OFFLINE_CASES = ["whatsapp_de_text", "whatsapp_en_terse", "email_fr_body", "email_en_pdf_attachment",
                 "docx_it_table"]


@pytest.mark.parametrize("case", OFFLINE_CASES)
def test_offline_provider_gets_supplier_currency_and_total(offline_api, case):
    status, _, job = send(offline_api, case)
    assert status == 202, job
    done = finished(offline_api, job["job_id"])
    assert done["status"] == "done", done["error"]
    offer, want = done["data"], expected(case)
    assert offer["is_offer"] is True
    assert (offer["supplier"], offer["currency"], offer["total_net"]) == (
        want["supplier"], want["currency"], want["total_net"])
    assert done["usage"]["cost_usd"] == 0


def test_a_job_that_ends_with_an_error_is_listed_as_failed_not_done(offline_api):
    status, _, job = offline_api.request("POST", "/api/ingest", raw=b"<html><body><img src=x></body></html>",
                                         headers={"content-type": "text/html"})
    assert status == 202, job
    assert finished(offline_api, job["job_id"])["status"] == "failed"

    def listed(status: str) -> set[str]:
        return {j["job_id"] for j in offline_api.request("GET", f"/api/jobs?status={status}&limit=500")[2]["jobs"]}

    assert job["job_id"] in listed("failed") and job["job_id"] not in listed("done")


def test_offline_provider_marks_a_non_offer(offline_api):
    status, _, job = send(offline_api, "email_not_an_offer")
    done = finished(offline_api, job["job_id"])
    assert done["status"] == "done" and done["data"]["is_offer"] is False and done["data"]["items"] == []


def _job_count(http: Http) -> int:
    return len(http.request("GET", "/api/jobs?limit=500")[2]["jobs"])


def test_rate_limit_is_retried_after_the_retry_after_delay(openai_api, reset):
    reset.script.extend([{"status": 429, "headers": {"Retry-After": "1"}}, {"json": model_answer("whatsapp_en_terse")}])
    _, _, job = send(openai_api, "whatsapp_en_terse")
    done = finished(openai_api, job["job_id"])
    assert done["status"] == "done" and done["data"]["total_net"] == 2520.0
    assert len(reset.chat_requests()) == 2


@pytest.mark.parametrize("behaviour,code,calls", [
    ({"status": 500}, "ai_server_error", 3),
    ({"hang": 4}, "ai_timeout", 3),
    ({"content": "{not json"}, "model_output_invalid", 3),
    ({"refusal": "I cannot help with that."}, "model_refused", 1),
    ({"status": 400}, "ai_bad_request", 1),
])
def test_model_faults_end_failed_with_a_clear_code(openai_api, reset, behaviour, code, calls):
    reset.default = behaviour
    _, _, job = send(openai_api, "whatsapp_de_text")
    done = finished(openai_api, job["job_id"], timeout=90)
    assert done["status"] == "failed", done
    assert done["error"]["code"] == code, done["error"]
    assert done["data"] is None
    assert len(reset.chat_requests()) == calls


BAD_INPUTS = [
    ("empty body", b"", "application/json", 400, None),
    ("empty JSON", b"{}", "application/json", 400, "empty_request"),
    ("not JSON", b"{oops", "application/json", 400, "invalid_json"),
    ("unsupported type", b"<x/>", "application/xml", 415, "unsupported_media_type"),
    ("corrupt PDF", b"%PDF-1.7\nthis is not a pdf", "application/pdf", 422, "pdf_corrupt"),
    ("corrupt DOCX", b"PK\x03\x04garbage", "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
     422, "docx_corrupt"),
    ("corrupt image", b"\x89PNG\r\n\x1a\n\x00\x00garbage", "image/png", 422, "image_corrupt"),
    ("PDF that is not", b"hello", "application/pdf", 422, "pdf_corrupt"),
    ("non-UTF-8 text", "Preis 10 €".encode("cp1252"), "text/plain", 422, "text_not_utf8"),
    ("invalid base64", json.dumps({"file": {"name": "a.pdf", "content_base64": "***"}}).encode(), "application/json",
     400, "invalid_base64"),
    ("multipart without file", b"--b\r\nContent-Disposition: form-data; name=\"source\"\r\n\r\nemail\r\n--b--\r\n",
     "multipart/form-data; boundary=b", 400, "empty_request"),
    ("http callback", json.dumps({"text": "x", "callback_url": "http://example.com/hook"}).encode(),
     "application/json", 422, "invalid_callback_url"),
    ("private callback", json.dumps({"text": "x", "callback_url": "https://10.1.2.3/hook"}).encode(),
     "application/json", 422, "callback_url_not_public"),
    ("loopback callback", json.dumps({"text": "x", "callback_url": "https://localhost:8443/hook"}).encode(),
     "application/json", 422, "callback_url_not_public"),
    ("unknown field", json.dumps({"text": "x", "colour": "red"}).encode(), "application/json", 422,
     "invalid_request"),
]


@pytest.mark.parametrize("name,body,content_type,status,code", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_a_4xx_json_error_and_starts_no_job(openai_api, reset, name, body, content_type, status, code):
    before = _job_count(openai_api)
    got, _, answer = openai_api.request("POST", "/api/ingest", raw=body, headers={"content-type": content_type})
    assert got == status, answer
    assert "error" in answer and (code is None or answer["error"]["code"] == code), answer
    assert _job_count(openai_api) == before
    assert reset.chat_requests() == []


def test_body_over_the_limit_is_413(azurite_module):
    host = _devhost(azurite_module, AI_PROVIDER="offline", INGEST_MAX_BYTES="1000")
    try:
        status, _, answer = Http(host.base_url, FUNCTION_KEY).request("POST", "/api/ingest", raw=b"x" * 2000,
                                                                     headers={"content-type": "text/plain"})
        assert status == 413 and answer["error"]["code"] == "payload_too_large"
    finally:
        host.stop()


def test_unknown_job_is_404(openai_api):
    status, _, body = openai_api.request("GET", "/api/result/offer-0000000000")
    assert status == 404 and body["error"]["code"] == "job_not_found"


def test_same_idempotency_key_concurrently_gives_one_job_and_one_model_call(openai_api, reset):
    reset.default = {"json": model_answer("whatsapp_en_terse")}
    key = {"Idempotency-Key": f"make-{uuid.uuid4()}"}
    with ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(lambda _: send(openai_api, "whatsapp_en_terse", headers=key), range(5)))
    assert {status for status, _, _ in answers} <= {200, 202}
    ids = {job["job_id"] for _, _, job in answers}
    assert len(ids) == 1
    finished(openai_api, ids.pop())
    assert len(reset.chat_requests()) == 1


def test_same_idempotency_key_with_another_body_is_409(openai_api, reset):
    reset.default = {"json": model_answer("whatsapp_en_terse")}
    key = {"Idempotency-Key": f"make-{uuid.uuid4()}"}
    assert send(openai_api, "whatsapp_en_terse", headers=key)[0] == 202
    status, _, body = send(openai_api, "whatsapp_de_text", headers=key)
    assert status == 409 and body["error"]["code"] == "idempotency_key_reused"


def test_requests_racing_under_one_key_with_other_bodies_do_not_swap_the_accepted_ones_input(openai_api, azurite_module,
                                                                                            reset):
    """Texts over 32 KiB go to Blob storage before the job starts: each racing request stored its text under the
    key's job id, so the accepted job could read a body the API answered 409 to (found in 8 of 8 rounds)."""
    reset.default = {"json": model_answer("whatsapp_en_terse")}
    for _ in range(3):
        key = {"Idempotency-Key": f"make-{uuid.uuid4()}"}
        texts = [f"Supplier{n} GmbH offers 3 x Chair{n} at 5 EUR. " + "x" * 36_000 for n in range(4)]
        barrier = threading.Barrier(len(texts))

        def post(text: str) -> tuple[int, dict]:
            barrier.wait()
            status, _, body = openai_api.request("POST", "/api/ingest", {"text": text}, headers=key)
            return status, body

        with ThreadPoolExecutor(len(texts)) as pool:
            answers = list(pool.map(post, texts))
        [accepted] = [n for n, (status, _) in enumerate(answers) if status == 202]
        assert sorted(status for status, _ in answers) == [202, 409, 409, 409], answers
        job_id = answers[accepted][1]["job_id"]
        finished(openai_api, job_id)
        read = [_user_text(r) for r in reset.chat_requests() if f"Supplier{accepted} GmbH" in _user_text(r)]
        assert len(read) == 1 and all(f"Supplier{n} GmbH" not in read[0] for n in range(4) if n != accepted)
        # the refused requests' texts are not left behind in storage: only the accepted one's folder stays
        assert len({name.split("/")[1] for name in input_files(azurite_module, job_id)}) == 1
        reset.requests.clear()


def input_files(azurite: Azurite, job_id: str) -> list[str]:
    """The names of the files stored for the job (under its id in the inputs container)."""
    return azurite.blob_names("intake-inputs", f"{job_id}/")


def test_deleting_a_finished_job_deletes_the_files_it_was_sent(openai_api, azurite_module, reset):
    reset.default = {"json": model_answer("email_en_pdf_attachment")}
    status, _, job = send(openai_api, "email_en_pdf_attachment")
    assert status == 202
    finished(openai_api, job["job_id"])
    assert input_files(azurite_module, job["job_id"])  # the e-mail's attachment, kept while the job is
    assert openai_api.request("DELETE", f"/api/jobs/{job['job_id']}")[0] == 204
    assert input_files(azurite_module, job["job_id"]) == []
    assert openai_api.request("GET", f"/api/jobs/{job['job_id']}")[0] == 404


def test_a_slow_upload_and_a_quick_text_under_one_key_start_one_job(offline_api):
    """The upload checks the key first, then stores 20 MB; the text starts meanwhile and finishes: the upload must
    get a 409, not replace the finished job (Durable replaces finished instances) and run the key twice."""
    boundary = "----slow"
    part = b"Offer line: 1 crate at 5 EUR\n" * 40_000
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="f{n}"; filename="p{n}.txt"\r\n'
                    f"Content-Type: text/plain\r\n\r\n".encode() + part + str(n).encode() + b"\r\n"
                    for n in range(16)) + f"--{boundary}--\r\n".encode()
    for delay in (0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0):
        key = {"Idempotency-Key": f"slow-{uuid.uuid4().hex}"}
        answers: dict[str, tuple] = {}

        def upload() -> None:
            answers["upload"] = offline_api.request(
                "POST", "/api/ingest", raw=body, timeout=120,
                headers={**key, "content-type": f"multipart/form-data; boundary={boundary}"})

        thread = threading.Thread(target=upload)
        thread.start()
        time.sleep(delay)
        answers["text"] = offline_api.request("POST", "/api/ingest", {"text": "Offer: 7 bolts at 2 EUR"}, headers=key)
        thread.join()
        statuses = sorted(answers[name][0] for name in ("upload", "text"))
        assert statuses[0] in (200, 202) and statuses[1] == 409, (delay, statuses)


def test_a_request_whose_files_could_not_be_stored_leaves_its_key_free(offline_api, azurite_module):
    """Its claim of the key goes with it: a corrected body under the same key starts at once, not a 409 for ever
    (or a 30 s wait for a twin that is gone)."""
    from azure.storage.blob import BlobServiceClient

    from shared.jobs import job_id_for, request_fingerprint
    from shared.offers import ingest

    key = f"stuck-{uuid.uuid4().hex}"
    first = {"text": "Offer from ACME GmbH\n" + "Widget 10 pcs 5.00 EUR\n" * 2000}  # over 32 KiB: stored as a file
    job_id = job_id_for("offer", key)
    fingerprint = request_fingerprint(ingest.parse_json(json.dumps(first).encode()).fingerprint_view())
    service = BlobServiceClient.from_connection_string(azurite_module.connection_string)
    container = service.get_container_client("intake-inputs")
    if not container.exists():
        container.create_container()
    blocker = container.get_blob_client(f"{job_id}/{fingerprint[:16]}/text.txt")
    blocker.upload_blob(b"x", overwrite=True)
    lease = blocker.acquire_lease(-1)  # the request cannot write its text: a storage fault, as far as it knows
    try:
        assert offline_api.request("POST", "/api/ingest", first, headers={"Idempotency-Key": key})[0] >= 500
    finally:
        lease.release()
    started = time.monotonic()
    status, _, job = offline_api.request("POST", "/api/ingest", {"text": "Offer: 3 chairs at 5 EUR"},
                                         headers={"Idempotency-Key": key})
    assert status == 202 and job["job_id"] == job_id and time.monotonic() - started < 10, job


def test_wait_returns_the_offer_in_the_same_call(openai_api, reset):
    reset.default = {"json": model_answer("whatsapp_en_terse")}
    status, _, job = send(openai_api, "whatsapp_en_terse", query="?wait=20")
    assert status == 200 and job["status"] == "done" and job["data"]["total_net"] == 2520.0


def test_callback_is_signed_and_retried_until_accepted_once(openai_api, reset):
    reset.default = {"json": model_answer("whatsapp_de_text")}
    with Receiver(SECRET) as receiver:
        receiver.script.extend([500, 503])
        status, _, job = openai_api.request("POST", "/api/ingest", {
            "text": (FIXTURES / "whatsapp_de_text" / "message.txt").read_text(), "source": "whatsapp",
            "metadata": {"scenario": "42"}, "callback_url": receiver.url})
        assert status == 202
        done = finished(openai_api, job["job_id"], timeout=60)
        assert done["callback"] == {"url": receiver.url, "status": "delivered", "attempts": 3, "status_code": 200}
        assert [a["status"] for a in receiver.attempts] == [500, 503, 200]
        assert all(a["verified"] for a in receiver.attempts)
        [webhook_id] = {a["headers"]["webhook-id"] for a in receiver.attempts}
        assert "." not in webhook_id  # Standard Webhooks signs id.timestamp.body
        [accepted] = receiver.accepted
        assert accepted["payload"]["type"] == "offer.parsed" and accepted["payload"]["job_id"] == job["job_id"]
        assert accepted["payload"]["data"]["supplier"] == "Schrauben Koch KG"
        assert accepted["payload"]["metadata"] == {"scenario": "42"}


def test_callback_that_keeps_failing_is_recorded_on_the_job(openai_api, reset):
    reset.default = {"json": model_answer("whatsapp_en_terse")}
    with Receiver(SECRET) as receiver:
        receiver.script.extend([500] * 10)
        _, _, job = openai_api.request("POST", "/api/ingest", {"text": "2 boxes at $3", "callback_url": receiver.url})
        started = time.monotonic()
        done = finished(openai_api, job["job_id"], timeout=60)
        assert done["status"] == "done"  # the offer is fine; only the delivery failed
        assert done["callback"]["status"] == "failed" and done["callback"]["attempts"] == 4
        assert done["callback"]["error"]["code"] == "callback_failed"
        assert len(receiver.attempts) == 4 and time.monotonic() - started < 30


@pytest.mark.parametrize("content_type,encoding", [
    ("text/plain; charset=windows-1252", "cp1252"), ("text/plain", "utf-16-le"), ("text/plain; charset=UTF-16", "utf-16")])
def test_a_raw_text_offer_is_read_in_the_charset_its_content_type_names_or_its_bytes_show(
        openai_api, reset, content_type, encoding):
    reset.default = {"json": {"is_offer": True, "supplier": "Müller GmbH", "currency": "EUR", "items": []}}
    text = "Angebot Müller GmbH: 10 Stück Widget à 5,00 € netto"
    status, _, job = openai_api.request("POST", "/api/ingest", raw=text.encode(encoding),
                                        headers={"content-type": content_type})
    assert status == 202, job
    assert finished(openai_api, job["job_id"])["status"] == "done"
    assert text in _user_text(reset.chat_requests()[-1])  # the model read it as written
