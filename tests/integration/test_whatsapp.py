"""WhatsApp assistant over real HTTP: signed WAHA events in, grounded replies out through a fake WAHA."""
from __future__ import annotations

import asyncio
import copy
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shared.config import Settings
from shared.storage.tables import Tables
from shared.whatsapp import assistant
from shared.whatsapp.events import classify, parse_envelope
from shared.whatsapp.signature import sign
from tests.support.fake_waha import FakeWaha
from tests.support.http import Http, wait_until
from tests.support.receiver import Receiver
from tests.support.processes import FUNCTION_KEY, MASTER_KEY, DevhostProcess, free_port

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures"
KEY = "integration-waha-hmac-key"
TEXT = json.loads((FIXTURES / "waha" / "message.text.direct.json").read_text())


@pytest.fixture(scope="module")
def waha():
    with FakeWaha() as server:
        yield server


@pytest.fixture(scope="module")
def api(azurite_module, waha):
    host = DevhostProcess(azurite_module.connection_string, {
        "DEVHOST_RPC_PORT": str(free_port()), "AI_PROVIDER": "offline", "WAHA_BASE_URL": waha.base_url,
        "WAHA_API_KEY": "waha-api-key", "WAHA_HMAC_KEY": KEY, "WHATSAPP_BURST_SECONDS": "1",
        "AI_RETRY_BASE_SECONDS": "0.3", "CALLBACK_ALLOWED_HOSTS": "127.0.0.1"}).start()
    http = Http(host.base_url, FUNCTION_KEY)
    pdf = (FIXTURES / "documents" / "rental_agreement_3p" / "agreement.pdf").read_bytes()
    status, _, job = http.request("POST", "/api/kb/documents?wait=20&name=agreement.pdf", raw=pdf,
                                  headers={"content-type": "application/pdf"})
    assert status == 200 and job["status"] == "done", job
    yield http
    host.stop()


def event(text: str, chat: str, message_id: str | None = None) -> dict:
    body = copy.deepcopy(TEXT)
    body["timestamp"] = int(time.time() * 1000)
    body["payload"].update(id=f"false_{chat}_{message_id or uuid.uuid4().hex[:20].upper()}", body=text,
                           **{"from": chat}, timestamp=int(time.time()))
    return body


def media_event(waha: FakeWaha, fixture: str, chat: str, extension: str, data: bytes, **payload) -> tuple[dict, str]:
    """A WAHA media event of `fixture` for `chat`, its file served by the fake WAHA; the event and its path."""
    body = json.loads((FIXTURES / "waha" / fixture).read_text())
    message_id = f"false_{chat}_{uuid.uuid4().hex[:20].upper()}"
    path = f"/api/files/{message_id}.{extension}"
    waha.files[path] = data
    body["timestamp"] = int(time.time() * 1000)
    body["payload"].update(id=message_id, timestamp=int(time.time()), **{"from": chat}, **payload)
    body["payload"]["media"]["url"] = f"https://waha.example.test{path}"
    return body, path


def post(api: Http, body: dict, key: str = KEY, headers: dict | None = None) -> tuple[int, dict]:
    raw = json.dumps(body).encode()
    all_headers = {"content-type": "application/json", "X-Webhook-Hmac": sign(raw, key),
                   "X-Webhook-Hmac-Algorithm": "sha512", **(headers or {})}
    status, _, answer = Http(api.base_url, None).request("POST", "/api/webhook", raw=raw, headers=all_headers)
    return status, answer


def new_chat() -> str:
    return f"1555{uuid.uuid4().int % 10**7:07d}@c.us"


def test_question_gets_exactly_one_reply_with_the_retrieved_fact(api, waha):
    chat = new_chat()
    assert post(api, event("How much is the monthly rent?", chat)) == (200, {"status": "accepted"})
    [reply] = wait_until(lambda: waha.sent(chat), timeout=30)
    assert "2,350" in reply["text"] and reply["reply_to"].startswith("false_")
    paths = wait_until(lambda: (lambda p: p if p[-1] == "/api/stopTyping" else None)(
        [c["path"] for c in waha.calls if c["body"].get("chatId") == chat]), timeout=10)
    assert paths == ["/api/sendSeen", "/api/startTyping", "/api/sendText", "/api/stopTyping"]
    assert all(c["api_key"] == "waha-api-key" for c in waha.calls)
    time.sleep(2)
    assert len(waha.sent(chat)) == 1


@pytest.mark.parametrize("fixture", ["message.group.json", "message.status-broadcast.json",
                                     "message.channel-newsletter.json", "message-any.from-me-api.json",
                                     "message.reaction.json", "message.ack.json", "message.edited.json",
                                     "message.revoked.json", "session.status.working.json"])
def test_events_the_bot_must_not_answer_are_acknowledged_and_ignored(api, waha, fixture):
    body = json.loads((FIXTURES / "waha" / fixture).read_text())
    body["timestamp"] = int(time.time() * 1000)
    before = len(waha.sent())
    status, answer = post(api, body)
    assert status == 200 and answer["status"] == "ignored", answer
    assert len(waha.sent()) == before


def test_each_event_delivered_three_times_concurrently_gets_one_reply(api, waha):
    chat = new_chat()
    body = event("What is the security deposit?", chat)
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda _: post(api, body), range(3)))
    assert sorted(a[1]["status"] for a in answers) == ["accepted", "duplicate", "duplicate"]
    wait_until(lambda: waha.sent(chat), timeout=30)
    time.sleep(2)
    assert len(waha.sent(chat)) == 1


@pytest.mark.parametrize("headers,key", [({}, "wrong-key"), ({"X-Webhook-Hmac": ""}, KEY),
                                         ({"X-Webhook-Hmac-Algorithm": "sha256"}, KEY)])
def test_bad_or_missing_signature_is_401_and_nothing_is_stored(api, waha, headers, key):
    chat = new_chat()
    status, answer = post(api, event("Hello?", chat), key=key, headers=headers)
    assert status == 401 and answer["error"]["code"].startswith("waha_")
    time.sleep(1.5)
    assert waha.sent(chat) == []


@pytest.mark.parametrize("gap", [0.2, 0.6])
def test_burst_of_messages_gets_one_reply(api, waha, gap):
    """Four lines typed `gap` s apart are one turn: the burst window (1 s here) counts from the last line, so
    lines 0.6 s apart, 1.8 s in all, are one turn too."""
    chat = new_chat()
    for text in ("Hi", "I have a question", "about the apartment", "how much is the monthly rent?"):
        assert post(api, event(text, chat))[0] == 200
        time.sleep(gap)
    [reply] = wait_until(lambda: waha.sent(chat), timeout=30)
    assert "2,350" in reply["text"]
    time.sleep(2)
    assert len(waha.sent(chat)) == 1


def test_a_burst_of_long_lines_full_of_quotes_is_answered_and_the_chat_keeps_working(api, waha):
    """Each line's text goes through the conversation's history several times, escaped at each JSON layer: four
    8,000-character lines of quotes once overflowed devhost's storage of the conversation, which then failed
    every step, and every later message to the chat was a 500."""
    chat = new_chat()
    for n in range(4):
        assert post(api, event(f'line {n} ' + '"' * 7_990, chat))[0] == 200
    wait_until(lambda: waha.sent(chat), timeout=30)
    assert post(api, event("how much is the monthly rent?", chat))[0] == 200
    wait_until(lambda: len(waha.sent(chat)) == 2, timeout=30)
    assert "2,350" in waha.sent(chat)[1]["text"]


def test_a_customer_writing_to_two_of_the_businesss_numbers_is_answered_by_each_through_its_own(api, waha):
    """Both numbers' messages are stored in the chat's partition: each conversation took both and answered them in
    one reply through the other number (or both sent it: twice)."""
    chat = new_chat()
    asked = {"shop_a": ("Hello, how much is the monthly rent?", "RENTQUESTION01"),
             "shop_b": ("Is there a deposit?", "DEPOSITQUESTION1")}
    for session, (text, message_id) in asked.items():
        assert post(api, {**event(text, chat, message_id), "session": session})[0] == 200
    wait_until(lambda: len(waha.sent(chat)) == 2, timeout=30)
    time.sleep(2)  # no third send comes
    replies = waha.sent(chat)
    assert sorted(r["session"] for r in replies) == ["shop_a", "shop_b"]
    for reply in replies:  # each quotes the question its own number was asked
        assert reply["reply_to"].endswith(asked[reply["session"]][1]), reply


def stored_without_waking(api: Http, waha: FakeWaha, connection_string: str,
                          claimed_ago: float = 0.0) -> tuple[str, dict, Tables]:
    """A chat answered once, whose conversation sleeps; then its rent question stored and its wake-up claimed
    (`claimed_ago` s ago) as the webhook does, but nobody wakes the conversation. The chat, the event, tables."""
    chat = new_chat()
    assert post(api, event("Hello", chat))[0] == 200
    wait_until(lambda: waha.sent(chat), timeout=30)
    time.sleep(1.5)  # the conversation found nothing more and sleeps
    body = event("How much is the monthly rent?", chat)
    message = classify(parse_envelope(json.dumps(body).encode())).message
    tables = Tables(Settings.model_validate({"AzureWebJobsStorage": connection_string}))

    async def store_and_claim() -> bool:
        await assistant.record_incoming(tables, message, "text")
        return await assistant.claim_wake(tables, message.session, chat, time.time() - claimed_ago) is not None

    # a claim the sweep takes: clear of the host's own run at the minute, on a slow machine too
    if claimed_ago >= assistant.WAKE_CLAIM_SECONDS and time.time() % 60 > 45:
        time.sleep(60 - time.time() % 60 + 1)
    assert asyncio.run(store_and_claim())
    time.sleep(1.5)
    assert len(waha.sent(chat)) == 1  # nobody woke the conversation
    return chat, body, tables


def test_a_delivery_cut_off_before_waking_the_conversation_is_answered_when_waha_delivers_it_again(
        api, waha, azurite_module):
    """The webhook died after storing the message and claiming the wake-up, before waking the sleeping
    conversation: WAHA's redelivery is a duplicate, and it wakes the conversation all the same."""
    chat, body, _ = stored_without_waking(api, waha, azurite_module.connection_string)
    assert post(api, body) == (200, {"status": "duplicate"})
    wait_until(lambda: len(waha.sent(chat)) == 2, timeout=30)
    assert "2,350" in waha.sent(chat)[-1]["text"]


def test_a_wake_up_gone_missing_is_repaired_by_the_minutely_sweep(api, waha, azurite_module):
    """A claim stored without its wake-up (its insert landed but answered an error, or the webhook died and WAHA
    did not deliver again): the next sweep of claims that stood for minutes wakes the conversation. The sweep
    is the `whatsapp_wake_sweep` timer, run here by hand as Azure's admin API allows."""
    chat, _, tables = stored_without_waking(api, waha, azurite_module.connection_string, claimed_ago=150)
    run = Http(api.base_url, MASTER_KEY).request("POST", "/admin/functions/whatsapp_wake_sweep", {"input": ""})
    assert run[0] == 202
    wait_until(lambda: len(waha.sent(chat)) == 2, timeout=30)
    assert "2,350" in waha.sent(chat)[-1]["text"]

    async def claims() -> list[str]:
        return [rk async for rk, _ in tables.partition(assistant.WAKES, chat)]

    wait_until(lambda: asyncio.run(claims()) == [], timeout=10)  # the conversation found nothing more


def test_paused_chat_gets_no_reply_until_resumed(api, waha):
    chat = new_chat()
    assert api.request("POST", f"/api/conversations/{chat}/pause")[2] == {"chat_id": chat, "paused": True}
    listed = {c["chat_id"]: c for c in api.request("GET", "/api/conversations")[2]["conversations"]}
    assert listed[chat]["paused"] is True and listed[chat]["messages"] == 0  # paused before it wrote: listed too
    post(api, event("Is the flat still free?", chat))
    time.sleep(3)
    assert waha.sent(chat) == []
    assert api.request("POST", f"/api/conversations/{chat}/resume")[2]["paused"] is False
    post(api, event("How much is the monthly rent?", chat))
    [reply] = wait_until(lambda: waha.sent(chat), timeout=30)
    assert "2,350" in reply["text"]


def test_a_pause_made_while_the_bot_is_answering_is_not_undone_by_the_turn(api, waha):
    chat = new_chat()
    waha.on_send = lambda body: body["chatId"] == chat and api.request("POST", f"/api/conversations/{chat}/pause")
    try:
        post(api, event("How much is the monthly rent?", chat))
        wait_until(lambda: waha.sent(chat), timeout=30)
    finally:
        waha.on_send = None
    # the turn wrote its memory after the operator paused the chat mid-reply
    detail = wait_until(lambda: (d := api.request("GET", f"/api/conversations/{chat}")[2])["memory"] and d, timeout=10)
    assert detail["paused"] is True
    post(api, event("And the deposit?", chat))
    time.sleep(3)
    assert len(waha.sent(chat)) == 1


def test_reply_is_sent_once_waha_recovers(api, waha):
    chat = new_chat()
    waha.send_script.extend([500, 422])
    post(api, event("How much is the monthly rent?", chat))
    [reply] = wait_until(lambda: waha.sent(chat), timeout=45)
    failures = [c for c in waha.calls if c["path"] == "/api/sendText" and c["body"]["chatId"] == chat
                and c["status"] != 201]
    assert len(failures) == 2 and "2,350" in reply["text"]
    time.sleep(2)
    assert len(waha.sent(chat)) == 1


def test_fifteen_messages_in_a_minute_get_ten_answered_and_one_notice(api, waha):
    chat = new_chat()
    for n in range(15):
        post(api, event(f"question {n} about the monthly rent", chat))
    sent = wait_until(lambda: (s := waha.sent(chat)) and len(s) >= 2 and s, timeout=30)
    time.sleep(2)
    sent = waha.sent(chat)
    notices = [s for s in sent if "faster than I can answer" in s["text"]]
    assert len(notices) == 1 and len(sent) == 2, [s["text"][:60] for s in sent]


def test_docx_knowledge_is_retrieved_and_gone_after_delete(api, waha):
    docx = (FIXTURES / "offers" / "docx_it_table" / "offer.docx").read_bytes()
    status, _, job = api.request("POST", "/api/kb/documents?wait=20&name=lamps.docx&id=lamps", raw=docx, headers={
        "content-type": "application/vnd.openxmlformats-officedocument.wordprocessingml.document"})
    assert status == 200 and job["result"]["chunks"] >= 1, job
    assert "lamps" in {d["id"] for d in api.request("GET", "/api/kb/documents")[2]["documents"]}
    chat = new_chat()
    post(api, event("What does the Plafoniera LED 24W cost?", chat))
    [reply] = wait_until(lambda: waha.sent(chat), timeout=30)
    assert "38,00" in reply["text"], reply["text"]
    assert api.request("DELETE", "/api/kb/documents/lamps")[0] == 204
    assert api.request("DELETE", "/api/kb/documents/lamps")[0] == 404
    post(api, event("What does the Plafoniera LED 24W cost?", chat))
    second = wait_until(lambda: (s := waha.sent(chat)) and len(s) == 2 and s[1], timeout=30)
    assert "38,00" not in second["text"]


def test_unnamed_knowledge_documents_are_known_by_their_content_not_all_by_one_id(api):
    def upload(text: str) -> str:
        status, _, job = api.request("POST", "/api/kb/documents?wait=20", raw=text.encode(),
                                     headers={"content-type": "text/plain"})
        assert status == 200 and job["status"] == "done", job
        return job["result"]["doc_id"]

    first, second = upload("Kayaks cost 30 EUR a day."), upload("Canoes cost 40 EUR a day.")
    assert first != second and upload("Kayaks cost 30 EUR a day.") == first
    listed = {d["id"] for d in api.request("GET", "/api/kb/documents")[2]["documents"]}
    assert {first, second} <= listed
    for doc_id in (first, second):
        assert api.request("DELETE", f"/api/kb/documents/{doc_id}")[0] == 204


def test_knowledge_text_is_read_in_the_charset_it_names_and_markdown_by_either_name(api):
    for body, content_type in (("Die Kaution beträgt 700 €.".encode("cp1252"), "text/plain; charset=windows-1252"),
                               ("# Preise\n\nKajak: 30 EUR".encode(), "text/x-markdown")):
        status, _, job = api.request("POST", "/api/kb/documents?wait=20&id=charset-test", raw=body,
                                     headers={"content-type": content_type})
        assert status == 200 and job["status"] == "done", job
    assert api.request("DELETE", "/api/kb/documents/charset-test")[0] == 204
    pdf = (FIXTURES / "documents" / "rental_agreement_3p" / "agreement.pdf").read_bytes()
    status, _, job = api.request("POST", "/api/kb/documents?wait=20&id=labelled-text", raw=pdf,
                                 headers={"content-type": "text/plain; charset=utf-8"})  # a PDF, whatever its label
    assert status == 200 and job["status"] == "done" and job["result"]["chunks"] >= 1, job
    assert api.request("DELETE", "/api/kb/documents/labelled-text")[0] == 204
    status, _, answer = api.request("DELETE", "/api/kb/documents/" + "x" * 1500)
    assert status == 404 and answer["error"]["code"] == "document_not_found"


def test_a_canceled_knowledge_upload_never_goes_live(azurite_module, waha):
    from tests.support.fake_openai import FakeOpenAI

    with FakeOpenAI() as fake:
        fake.latency = 2.0
        host = DevhostProcess(azurite_module.connection_string, {
            "DEVHOST_RPC_PORT": str(free_port()), "AI_PROVIDER": "openai", "OPENAI_BASE_URL": fake.base_url,
            "OPENAI_API_KEY": "sk-fake", "WAHA_BASE_URL": waha.base_url, "WAHA_HMAC_KEY": KEY}).start()
        try:
            http = Http(host.base_url, FUNCTION_KEY)
            status, _, job = http.request("POST", "/api/kb/documents?name=canceled.txt&id=canceled",
                                          raw=b"Boat tours cost 777 EUR.", headers={"content-type": "text/plain"})
            assert status == 202, job
            wait_until(lambda: any(r["path"].endswith("/embeddings") for r in fake.requests), timeout=30)
            assert http.request("POST", f"/api/jobs/{job['job_id']}/cancel")[0] == 200
            time.sleep(fake.latency + 2)  # the embedding answers; the activity would store the document now
            assert "canceled" not in {d["id"] for d in http.request("GET", "/api/kb/documents")[2]["documents"]}
        finally:
            host.stop()


def test_read_apis_show_messages_conversations_and_stats(api, waha):
    chat = new_chat()
    post(api, event("How much is the monthly rent?", chat))
    wait_until(lambda: waha.sent(chat), timeout=30)
    rows = wait_until(lambda: (m := api.request("GET", f"/api/messages?chat_id={chat}")[2]["messages"])
                      and len(m) == 2 and m, timeout=10)
    assert [r["direction"] for r in rows] == ["in", "out"] and "2,350" in rows[1]["text"]
    only_out = api.request("GET", f"/api/messages?chat_id={chat}&direction=out")[2]["messages"]
    assert len(only_out) == 1
    page = api.request("GET", "/api/messages?limit=1")[2]
    assert len(page["messages"]) == 1 and page["continuation"]
    following = api.request("GET", f"/api/messages?limit=1&continuation={page['continuation']}")[2]["messages"]
    assert following and following != page["messages"]
    status, _, refused = api.request("GET", f"/api/messages?direction=out&continuation={page['continuation']}")
    assert status == 400 and refused["error"]["code"] == "invalid_continuation"  # made for another query
    assert api.request("GET", "/api/messages?direction=sideways")[0] == 400
    assert chat in {c["chat_id"] for c in api.request("GET", "/api/conversations")[2]["conversations"]}
    detail = api.request("GET", f"/api/conversations/{chat}")[2]
    assert detail["paused"] is False and detail["memory"][-1]["role"] == "assistant"
    assert api.request("GET", "/api/conversations/1555000000@c.us")[0] == 404
    status, _, stats = api.request("GET", "/api/stats")
    assert status == 200, stats
    assert stats["replies"] >= 1 and stats["messages_in"] >= stats["replies"]
    assert stats["reply_latency_s"]["median"] is not None and stats["duplicates_dropped"] >= 2
    assert stats["rate_limited_users"] >= 1


def test_voice_note_is_downloaded_transcribed_and_answered(api, waha):
    chat = new_chat()
    body, path = media_event(waha, "message.voice-note.json", chat, "oga",
                             (FIXTURES / "calls" / "sales_call_en" / "voice-note.ogg").read_bytes())
    assert post(api, body) == (200, {"status": "accepted"})
    [reply] = wait_until(lambda: waha.sent(chat), timeout=60)
    assert reply["text"]
    assert any(c["path"] == path and c["status"] == 200 and c["api_key"] == "waha-api-key" for c in waha.calls)
    [incoming] = api.request("GET", f"/api/messages?chat_id={chat}&direction=in")[2]["messages"]
    assert incoming["kind"] == "audio" and len(incoming["transcript"].split()) >= 3


def test_kill_9_during_a_turn_sends_the_reply_once_after_restart(azurite, waha, fake):
    fake.requests.clear()
    fake.latency, fake.default = 1.5, {"content": "The monthly rent is USD 2,350."}
    env = {"DEVHOST_RPC_PORT": str(free_port()), "AI_PROVIDER": "openai", "OPENAI_BASE_URL": fake.base_url,
           "OPENAI_API_KEY": "sk-fake", "WAHA_BASE_URL": waha.base_url, "WAHA_HMAC_KEY": KEY,
           "WHATSAPP_BURST_SECONDS": "0.2", "AI_RETRY_BASE_SECONDS": "0.3"}
    first = DevhostProcess(azurite.connection_string, env).start()
    chat = new_chat()
    try:
        assert post(Http(first.base_url), event("How much is the rent?", chat))[0] == 200
        wait_until(lambda: fake.requests, timeout=20)  # the turn is waiting on the model
        first.kill()
    finally:
        first.stop()
    assert waha.sent(chat) == []
    second = first.again().start()
    try:
        [reply] = wait_until(lambda: waha.sent(chat), timeout=60)
        assert reply["text"] == "The monthly rent is USD 2,350."
        time.sleep(3)
        assert len(waha.sent(chat)) == 1
    finally:
        second.stop()
        fake.latency = 0.0


def test_pdf_sent_in_the_chat_is_read_and_answered(api, waha):
    chat = new_chat()
    body, _ = media_event(waha, "message.document-pdf.json", chat, "pdf",
                          (FIXTURES / "documents" / "rental_agreement_3p" / "agreement.pdf").read_bytes(),
                          body="What is the rent in this contract?")
    message_id = body["payload"]["id"]
    assert post(api, body) == (200, {"status": "accepted"})
    [reply] = wait_until(lambda: waha.sent(chat), timeout=60)
    assert reply["text"] and reply["reply_to"] == message_id
    [incoming] = api.request("GET", f"/api/messages?chat_id={chat}&direction=in")[2]["messages"]
    assert incoming["kind"] == "document" and "Harbor View Properties LLC" in incoming["transcript"]
    assert incoming["transcript"].startswith("What is the rent in this contract?")


def test_a_turn_emits_received_reply_and_handoff_events_to_subscribers(api, waha):
    with Receiver() as receiver:
        status, _, subscription = api.request("POST", "/api/webhooks/subscriptions",
                                              {"url": receiver.url, "events": ["whatsapp.*"]})
        assert status == 201
        receiver.use_secret(subscription["secret"])
        chat = new_chat()
        try:
            assert post(api, event("Can I talk to a human about the deposit?", chat))[0] == 200
            wait_until(lambda: waha.sent(chat), timeout=30)

            def by_type():
                seen = {r["payload"]["type"]: r["payload"] for r in receiver.accepted
                        if r["payload"]["subject"] == chat}
                return seen if len(seen) == 3 else None

            events = wait_until(by_type, timeout=30)
            assert events["whatsapp.message.received"]["data"]["text"] == "Can I talk to a human about the deposit?"
            assert events["whatsapp.reply.sent"]["data"]["text"] == waha.sent(chat)[0]["text"]
            assert events["whatsapp.handoff.requested"]["data"]["reason"] == "customer_asked_for_person"
            assert all(r["verified"] for r in receiver.accepted)
        finally:
            api.request("DELETE", f"/api/webhooks/subscriptions/{subscription['id']}")


def test_media_that_cannot_be_read_is_answered_once_with_what_the_message_says(api, waha):
    chat = new_chat()
    body, path = media_event(waha, "message.document-pdf.json", chat, "pdf", b"%PDF-1.7 not really a pdf",
                             body="Is this offer still valid?")
    gone, _ = media_event(waha, "message.document-pdf.json", chat, "pdf", b"", body="and this one?")
    del waha.files[gone["payload"]["media"]["url"].removeprefix("https://waha.example.test")]  # WAHA deleted it
    assert post(api, body) == (200, {"status": "accepted"})
    assert post(api, gone) == (200, {"status": "accepted"})
    [reply] = wait_until(lambda: waha.sent(chat), timeout=60)
    assert reply["text"]
    time.sleep(3)  # three burst windows: a turn failing on the files would have run again meanwhile
    assert len(waha.sent(chat)) == 1
    incoming = api.request("GET", f"/api/messages?chat_id={chat}&direction=in")[2]["messages"]
    assert {m["status"] for m in incoming} == {"answered"}
    assert sorted(m["transcript"].split("\n")[1] for m in incoming) == [
        "[offer-2026-001.pdf: could not be read (pdf_corrupt)]", "[offer-2026-001.pdf: could not be read (waha_media_gone)]"]


def test_a_lone_surrogate_in_a_message_leaves_the_read_apis_readable(api, waha):
    chat = new_chat()
    raw = json.dumps(event("rent?", chat)).replace("rent?", "rent\\ud800?").encode()
    headers = {"content-type": "application/json", "X-Webhook-Hmac": sign(raw, KEY), "X-Webhook-Hmac-Algorithm": "sha512"}
    status, _, answer = Http(api.base_url, None).request("POST", "/api/webhook", raw=raw, headers=headers)
    assert (status, answer) == (200, {"status": "accepted"})
    status, _, listed = api.request("GET", f"/api/messages?chat_id={chat}&direction=in")
    assert status == 200 and listed["messages"][0]["text"] == "rent\ufffd?"
    assert api.request("GET", f"/api/conversations/{chat}")[0] in (200, 404)
    assert api.request("POST", "/api/conversations/%7F/pause")[0] == 400


@pytest.mark.parametrize("name", ["..", "a/..", "../../notes.txt"])
def test_a_knowledge_document_named_like_a_path_is_stored_under_a_safe_name(api, waha, name):
    status, _, job = api.request("POST", f"/api/kb/documents?wait=20&name={name}&id=odd-name",
                                 raw=b"Parking costs 50 EUR a month.", headers={"content-type": "text/plain"})
    assert status == 200 and job["status"] == "done", job
    assert api.request("DELETE", "/api/kb/documents/odd-name")[0] == 204


@pytest.fixture(scope="module")
def modelled(waha):
    """A host with a fake model (its requests counted) and a short wait before a failed turn is tried again; its
    own storage (the fake model's vectors are not those of the offline provider's knowledge base)."""
    from tests.support.fake_openai import FakeOpenAI
    from tests.support.processes import Azurite

    storage = Azurite().start()
    with FakeOpenAI() as fake:
        fake.default = {"content": "The monthly rent is USD 2,350."}
        host = DevhostProcess(storage.connection_string, {
            "DEVHOST_RPC_PORT": str(free_port()), "AI_PROVIDER": "openai", "OPENAI_BASE_URL": fake.base_url,
            "OPENAI_API_KEY": "sk-fake", "WAHA_BASE_URL": waha.base_url, "WAHA_HMAC_KEY": KEY,
            "WHATSAPP_BURST_SECONDS": "0.3", "AI_RETRY_BASE_SECONDS": "0.2", "WHATSAPP_SEND_ATTEMPTS": "2",
            "WHATSAPP_LOOK_AGAIN_SECONDS": "2"}).start()
        try:
            yield Http(host.base_url, FUNCTION_KEY), fake, host
        finally:
            host.stop()
            storage.stop()


def _chat_completions(fake, chat_text: str) -> list[dict]:
    return [r for r in fake.requests if r["path"].endswith("/chat/completions") and chat_text in json.dumps(r["body"])]


def test_a_reply_waha_cannot_take_for_long_is_tried_again_later_not_at_once_and_composed_once(modelled, waha):
    api, fake, host = modelled
    chat, question = new_chat(), f"How much is the rent? {uuid.uuid4().hex[:8]}"
    sends: list[float] = []
    waha.on_send = lambda body: body["chatId"] == chat and sends.append(time.monotonic())
    waha.send_script.extend([422, 422, 422])  # not WORKING through both attempts of a look, and once more
    try:
        post(api, event(question, chat))
        [reply] = wait_until(lambda: waha.sent(chat), timeout=45)
        time.sleep(2.5)
    finally:
        waha.on_send = None
    assert reply["text"] == "The monthly rent is USD 2,350." and len(waha.sent(chat)) == 1
    assert len(sends) == 4  # 2 attempts, then after the look-again wait 2 more
    assert sends[2] - sends[1] >= 1.8, sends  # not at once: no storm of retries
    assert len(_chat_completions(fake, question)) == 1  # the text composed first is the one sent
    assert "whatsapp.reply.failed" in host.log()
    rows = api.request("GET", f"/api/messages?chat_id={chat}")[2]["messages"]
    assert [(r["direction"], r["status"]) for r in rows] == [("in", "answered"), ("out", "sent")]


def test_a_reply_waha_refuses_for_good_fails_its_messages_and_hands_the_chat_over(modelled, waha):
    api, fake, host = modelled
    chat, question = new_chat(), f"How much is the rent? {uuid.uuid4().hex[:8]}"
    waha.send_script.extend([400])  # e.g. a chat WAHA will not send to
    post(api, event(question, chat))
    rows = wait_until(lambda: (m := api.request("GET", f"/api/messages?chat_id={chat}")[2]["messages"])
                      and m[0]["status"] == "failed" and m, timeout=30)
    time.sleep(3)  # a look-again (2 s) would have sent it again
    tried = [c for c in waha.calls if c["path"] == "/api/sendText" and c["body"]["chatId"] == chat]
    assert [c["status"] for c in tried] == [400] and len(_chat_completions(fake, question)) == 1
    assert [(r["direction"], r["status"], r.get("error")) for r in rows] == [("in", "failed", "waha_rejected")]
    assert "whatsapp.reply.refused" in host.log()
    post(api, event("And the deposit?", chat))  # the chat goes on
    wait_until(lambda: waha.sent(chat), timeout=30)


def test_a_rate_notice_waha_does_not_take_at_once_is_sent_once_later_and_the_reply_once(modelled, waha):
    api, fake, _ = modelled
    chat = new_chat()
    waha.send_script.extend([201, 422])  # the reply is taken, the notice after it not yet
    for n in range(11):  # one over the limit of 10 a minute, in one burst
        post(api, event(f"question {n} about the rent", chat))
    sent = wait_until(lambda: (s := waha.sent(chat)) and len(s) >= 2 and s, timeout=45)
    time.sleep(2)
    assert [s["text"] for s in waha.sent(chat)] == ["The monthly rent is USD 2,350.", assistant.RATE_NOTICE], sent
    assert len(_chat_completions(fake, "question 0 about the rent")) == 1
    incoming = api.request("GET", f"/api/messages?chat_id={chat}&direction=in")[2]["messages"]
    statuses = sorted(r["status"] for r in incoming)
    assert statuses == ["answered"] * 10 + ["rate_limited"]
    post(api, event("one more", chat))  # still over the limit: no model call, and no second notice
    time.sleep(2)
    assert len(_chat_completions(fake, "one more")) == 0 and len(waha.sent(chat)) == 2


def test_a_model_that_answers_nothing_gets_the_customer_a_dont_know_and_a_person(modelled, waha):
    api, fake, _ = modelled
    chat = new_chat()
    fake.default = {"content": ""}
    try:
        post(api, event("What is the meaning of the clause 7?", chat))
        [reply] = wait_until(lambda: waha.sent(chat), timeout=30)
    finally:
        fake.default = {"content": "The monthly rent is USD 2,350."}
    assert reply["text"] == "I don't know. A colleague will get back to you."


def test_a_pause_made_while_the_model_composes_sends_nothing(modelled, waha):
    api, fake, _ = modelled
    chat = new_chat()

    def pause_then_answer(body: dict) -> dict:
        if chat.split("@")[0] in json.dumps(body):
            api.request("POST", f"/api/conversations/{chat}/pause")
        return {"content": "The monthly rent is USD 2,350."}

    fake.default = pause_then_answer
    try:
        post(api, event(f"How much is the rent for {chat.split('@')[0]}?", chat))
        wait_until(lambda: any(r["status"] == "held" for r in
                               api.request("GET", f"/api/messages?chat_id={chat}")[2]["messages"]), timeout=30)
        time.sleep(1)
    finally:
        fake.default = {"content": "The monthly rent is USD 2,350."}
    assert waha.sent(chat) == []
    assert api.request("GET", f"/api/conversations/{chat}")[2]["paused"] is True


def test_an_engine_that_refuses_seen_and_typing_still_gets_the_reply_sent(api, waha):
    chat = new_chat()
    waha.courtesy_status = 400  # e.g. an engine without typing support
    try:
        post(api, event("How much is the monthly rent?", chat))
        [reply] = wait_until(lambda: waha.sent(chat), timeout=30)
    finally:
        waha.courtesy_status = 200
    assert "2,350" in reply["text"]
    refused = [c["path"] for c in waha.calls if c["body"].get("chatId") == chat and c["status"] == 400]
    assert "/api/sendSeen" in refused and "/api/startTyping" in refused
