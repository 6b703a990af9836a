"""The knowledge base in Azure AI Search (a fake of its REST API on loopback, driven by the real SDK)."""
from __future__ import annotations

import pytest

from tests.integration.test_whatsapp import FIXTURES, KEY, event, new_chat, post
from tests.support.fake_search import FakeSearch
from tests.support.fake_waha import FakeWaha
from tests.support.http import Http, wait_until
from tests.support.processes import FUNCTION_KEY, DevhostProcess, free_port


@pytest.fixture(scope="module")
def search():
    with FakeSearch() as server:
        yield server


@pytest.fixture(scope="module")
def waha():
    with FakeWaha() as server:
        yield server


@pytest.fixture(scope="module")
def api(azurite_module, waha, search):
    host = DevhostProcess(azurite_module.connection_string, {
        "DEVHOST_RPC_PORT": str(free_port()), "AI_PROVIDER": "offline", "WAHA_BASE_URL": waha.base_url,
        "WAHA_API_KEY": "waha-api-key", "WAHA_HMAC_KEY": KEY, "WHATSAPP_BURST_SECONDS": "1",
        "KB_SEARCH_BACKEND": "azure_search", "AZURE_SEARCH_ENDPOINT": search.endpoint,
        "AZURE_SEARCH_API_KEY": search.api_key}).start()
    yield Http(host.base_url, FUNCTION_KEY)
    host.stop()


def test_documents_go_to_the_search_index_answer_from_it_and_leave_it_when_deleted(api, waha, search):
    chat = new_chat()
    post(api, event("How much is the monthly rent?", chat))  # before any upload: no index, no passages
    [first] = wait_until(lambda: waha.sent(chat), timeout=30)
    assert "2,350" not in first["text"]

    pdf = (FIXTURES / "documents" / "rental_agreement_3p" / "agreement.pdf").read_bytes()
    status, _, job = api.request("POST", "/api/kb/documents?wait=20&name=agreement.pdf&id=lease", raw=pdf,
                                 headers={"content-type": "application/pdf"})
    assert status == 200 and job["status"] == "done", job
    stored = search.documents["knowledge"]
    assert len(stored) == job["result"]["chunks"] and {d["doc_id"] for d in stored.values()} == {"lease"}
    vector_field = next(f for f in search.indexes["knowledge"]["fields"] if f["name"] == "vector")
    assert vector_field["dimensions"] == len(next(iter(stored.values()))["vector"])

    post(api, event("How much is the monthly rent?", chat))
    second = wait_until(lambda: (s := waha.sent(chat)) and len(s) == 2 and s[1], timeout=30)
    assert "2,350" in second["text"]
    assert search.queries[-1]["vectorQueries"][0]["k"] == 5

    assert api.request("DELETE", "/api/kb/documents/lease")[0] == 204
    assert search.documents["knowledge"] == {}
    post(api, event("How much is the monthly rent?", chat))
    third = wait_until(lambda: (s := waha.sent(chat)) and len(s) == 3 and s[2], timeout=30)
    assert "2,350" not in third["text"]


def test_a_refused_search_key_fails_the_upload_with_a_clear_error_and_lists_nothing(api, search):
    search.api_key, key = "rotated", search.api_key
    try:
        status, _, job = api.request("POST", "/api/kb/documents?wait=20&name=notes.txt&id=notes",
                                     raw=b"The office opens at nine.", headers={"content-type": "text/plain"})
        deleting = api.request("DELETE", "/api/kb/documents/notes")
    finally:
        search.api_key = key
    assert deleting[0] == 503 and deleting[2]["error"]["code"] == "search_forbidden"  # said, not a 500
    assert api.request("DELETE", "/api/kb/documents/notes")[0] == 404
    assert status == 200 and job["status"] == "failed" and job["error"]["code"] == "search_forbidden", job
    assert "notes" not in {d["id"] for d in api.request("GET", "/api/kb/documents")[2]["documents"]}


def test_a_bad_document_id_is_refused_before_any_work(api):
    status, _, answer = api.request("POST", "/api/kb/documents?name=n.txt&id=" + "x" * 129, raw=b"text",
                                    headers={"content-type": "text/plain"})
    assert status == 400 and answer["error"]["code"] == "invalid_id"
    status, _, answer = api.request("POST", "/api/kb/documents?name=" + "n" * 256, raw=b"text",
                                    headers={"content-type": "text/plain"})
    assert status == 422 and answer["error"]["code"] == "invalid_file_name"  # once stored and listed as it came

