"""Automation over real HTTP on devhost + Azurite: signed webhook deliveries, notifications by SMTP, rules."""
from __future__ import annotations

import base64
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.automation.events import MAX_CUSTOM_DATA_BYTES
from tests.integration.test_offers import FIXTURES, finished, model_answer
from tests.support.http import Http, wait_until
from tests.support.processes import FUNCTION_KEY, DevhostProcess, free_port
from tests.support.fake_sms import FakeSms
from tests.support.receiver import Receiver

CALLBACK_SECRET = "whsec_" + base64.b64encode(b"automation-callback-secret").decode()


class Mailbox:
    """An aiosmtpd server on loopback; addresses starting with `nobody@` are refused (550)."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list = []
        self.port = free_port()
        mailbox = self

        class Handler:
            async def handle_RCPT(self, server, session, envelope, address, options):  # noqa: N802
                if address.startswith("nobody@"):
                    return "550 5.1.1 No such user"
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, server, session, envelope):  # noqa: N802
                from email import message_from_bytes, policy

                mailbox.messages.append(message_from_bytes(envelope.content, policy=policy.default))
                return "250 Message accepted"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def to(self, address: str) -> list:
        return [m for m in self.messages if m["To"] == address]


@pytest.fixture(scope="module")
def mailbox():
    box = Mailbox()
    box.controller.start()
    yield box
    box.controller.stop()


@pytest.fixture(scope="module")
def sms():
    with FakeSms() as server:
        yield server


@pytest.fixture(scope="module")
def host(azurite_module, fake, mailbox, sms):
    process = DevhostProcess(azurite_module.connection_string, {
        "DEVHOST_RPC_PORT": str(free_port()), "AI_PROVIDER": "openai", "OPENAI_BASE_URL": fake.base_url,
        "OPENAI_API_KEY": "sk-fake", "CALLBACK_ALLOWED_HOSTS": "127.0.0.1", "CALLBACK_SIGNING_SECRET": CALLBACK_SECRET,
        "WEBHOOK_RETRY_SCHEDULE": "0.3s,0.3s,0.3s,0.3s,0.3s,0.3s,0.3s", "AI_RETRY_BASE_SECONDS": "0.2",
        "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(mailbox.port), "SMTP_STARTTLS": "false",
        "EMAIL_FROM": "intake@example.com", "NOTIFY_RATE_LIMIT_PER_HOUR": "2", "SMS_BASE_URL": sms.root_url,
        "SMS_ACCOUNT_SID": "AC1", "SMS_AUTH_TOKEN": "sms-token", "SMS_FROM": "+15550001111"}).start()
    yield process
    process.stop()


@pytest.fixture()
def api(host):
    http = Http(host.base_url, FUNCTION_KEY)
    yield http
    for subscription in http.request("GET", "/api/webhooks/subscriptions")[2]["subscriptions"]:
        http.request("DELETE", f"/api/webhooks/subscriptions/{subscription['id']}")


def subscribe(api: Http, receiver: Receiver, events: list[str]) -> dict:
    status, _, subscription = api.request("POST", "/api/webhooks/subscriptions",
                                          {"url": receiver.url, "events": events, "description": "test"})
    assert status == 201, subscription
    receiver.use_secret(subscription["secret"])
    return subscription


def publish(api: Http, type_: str = "custom.test", data: dict | None = None, event_id: str | None = None) -> dict:
    body = {"type": type_, "subject": "s-1", "data": data or {"n": 1}}
    if event_id:
        body["id"] = event_id
    status, _, routed = api.request("POST", "/api/events", body)
    assert status == 202, routed
    return routed


def delivery_of(api: Http, subscription: dict, predicate) -> dict:
    def check():
        found = api.request("GET", f"/api/webhooks/deliveries?subscription_id={subscription['id']}")[2]["deliveries"]
        return next((d for d in found if predicate(d)), None)

    return wait_until(check, timeout=30, interval=0.1)


def test_receiver_failing_three_times_gets_one_verified_delivery_and_the_log_shows_four_attempts(api):
    with Receiver() as receiver:
        subscription = subscribe(api, receiver, ["custom.*"])
        assert subscription["secret"].startswith("whsec_")
        receiver.script.extend([500, 503, 500])
        routed = publish(api, "custom.order.created", {"order": 17})
        delivered = delivery_of(api, subscription, lambda d: d["status"] == "delivered")
        assert [a["status_code"] for a in delivered["attempts"]] == [500, 503, 500, 200]
        assert [a["number"] for a in delivered["attempts"]] == [1, 2, 3, 4]
        assert routed["deliveries"] == [delivered["id"]]
        time.sleep(1)
        assert len(receiver.attempts) == 4 and len(receiver.accepted) == 1
        accepted = receiver.accepted[0]
        assert accepted["verified"] and accepted["headers"]["webhook-id"] == routed["event"]["id"]
        assert {a["headers"]["webhook-id"] for a in receiver.attempts} == {routed["event"]["id"]}
        envelope = accepted["payload"]
        assert set(envelope) == {"id", "type", "occurred_at", "subject", "data"}
        assert envelope["type"] == "custom.order.created" and envelope["data"] == {"order": 17}
        listed = api.request("GET", "/api/webhooks/subscriptions")[2]["subscriptions"]
        assert all("secret" not in s and "secrets" not in s for s in listed)


def test_the_same_event_published_twice_is_delivered_once(api):
    with Receiver() as receiver:
        subscription = subscribe(api, receiver, ["custom.dedup"])
        event_id = f"mine-{uuid.uuid4().hex[:8]}"
        first, second = publish(api, "custom.dedup", event_id=event_id), publish(api, "custom.dedup", event_id=event_id)
        assert first["deliveries"] == second["deliveries"]
        status, _, refused = api.request("POST", "/api/events", {"type": "custom.dedup", "subject": "s-1",
                                                                 "data": {"n": 2}, "id": event_id})
        assert status == 409 and refused["error"]["code"] == "event_id_reused"  # not dropped without a word
        delivery_of(api, subscription, lambda d: d["status"] == "delivered")
        time.sleep(1)
        assert len(receiver.accepted) == 1


def test_deliveries_are_listed_newest_first_page_by_page(api):
    with Receiver() as receiver:
        subscription = subscribe(api, receiver, ["custom.paged"])
        published = [publish(api, "custom.paged", {"n": n})["deliveries"][0] for n in range(5)]
        wait_until(lambda: len(receiver.accepted) == 5, timeout=30, interval=0.1)
        path = f"/api/webhooks/deliveries?subscription_id={subscription['id']}&limit=2"
        seen, continuation = [], None
        for _ in range(4):
            status, _, page = api.request("GET", path + (f"&continuation={continuation}" if continuation else ""))
            assert status == 200 and page["count"] == len(page["deliveries"]) <= 2
            seen += [d["id"] for d in page["deliveries"]]
            continuation = page["continuation"]
            if continuation is None:
                break
        assert sorted(seen) == sorted(published) and len(seen) == 5
        assert continuation is None
        first = api.request("GET", path)[2]
        status, _, refused = api.request(  # a token serves the filters it was made for
            "GET", f"/api/webhooks/deliveries?status=failed&continuation={first['continuation']}")
        assert status == 400 and refused["error"]["code"] == "invalid_continuation"


def test_410_gone_disables_the_subscription_and_stops_retrying(api):
    with Receiver() as receiver:
        subscription = subscribe(api, receiver, ["custom.*"])
        receiver.script.extend([410])
        publish(api)
        failed = delivery_of(api, subscription, lambda d: d["status"] == "failed")
        assert [a["status_code"] for a in failed["attempts"]] == [410]
        state = api.request("GET", f"/api/webhooks/subscriptions/{subscription['id']}")[2]
        assert state["enabled"] is False and "410" in state["disabled_reason"]
        publish(api)  # a disabled subscription gets nothing
        time.sleep(1)
        assert len(receiver.attempts) == 1
        status, _, refused = api.request("POST", f"/api/webhooks/deliveries/{failed['id']}/replay")
        assert status == 409 and refused["error"]["code"] == "subscription_disabled"  # not a 202 that sends nothing
        assert api.request("POST", f"/api/webhooks/subscriptions/{subscription['id']}/enable")[2]["enabled"] is True
        assert api.request("POST", f"/api/webhooks/deliveries/{failed['id']}/replay")[0] == 202
        delivery_of(api, subscription, lambda d: d["status"] == "delivered")


def test_replay_sends_the_event_again_as_a_new_attempt(api):
    with Receiver() as receiver:
        subscription = subscribe(api, receiver, ["custom.*"])
        routed = publish(api)
        delivered = delivery_of(api, subscription, lambda d: d["status"] == "delivered")
        status, _, _ = api.request("POST", f"/api/webhooks/deliveries/{delivered['id']}/replay")
        assert status == 202
        replayed = delivery_of(api, subscription, lambda d: len(d["attempts"]) == 2)
        assert [a["trigger"] for a in replayed["attempts"]] == ["schedule", "replay"]
        assert [r["headers"]["webhook-id"] for r in receiver.accepted] == [routed["event"]["id"]] * 2
        assert api.request("POST", "/api/webhooks/deliveries/dlv_nope/replay")[0] == 404


def test_rotation_signs_with_the_new_and_the_old_secret(api):
    from standardwebhooks.webhooks import Webhook

    with Receiver() as receiver:
        subscription = subscribe(api, receiver, ["custom.*"])
        status, _, rotated = api.request("POST", f"/api/webhooks/subscriptions/{subscription['id']}/rotate")
        assert status == 200 and rotated["secret"] != subscription["secret"]
        receiver.use_secret(rotated["secret"])
        publish(api)
        wait_until(lambda: receiver.accepted, timeout=30)
        record = receiver.accepted[0]
        assert len(record["headers"]["webhook-signature"].split(" ")) == 2
        for secret in (subscription["secret"], rotated["secret"]):  # each secret alone verifies the delivery
            Webhook(secret).verify(record["body"], record["headers"])


@pytest.mark.parametrize("body,code", [
    ({"url": "http://example.com/hook", "events": ["offer.parsed"]}, "invalid_callback_url"),
    ({"url": "https://10.0.0.7/hook", "events": ["offer.parsed"]}, "callback_url_not_public"),
    ({"url": "https://example.com/hook", "events": ["offer.exploded"]}, "invalid_request"),
    ({"url": "https://example.com/hook", "events": []}, "invalid_request"),
])
def test_bad_subscriptions_are_422(api, body, code):
    status, _, answer = api.request("POST", "/api/webhooks/subscriptions", body)
    assert status == 422 and answer["error"]["code"] == code, answer


def test_template_email_arrives_with_subject_text_and_html(api, mailbox):
    name = f"welcome-{uuid.uuid4().hex[:6]}"
    status, _, _ = api.request("POST", "/api/templates", {
        "name": name, "subject": "Offer {{ number }} received",
        "text": "Hello {{ who }}, offer {{ number }} is in.", "html": "<p>Hello <b>{{ who }}</b></p>"})
    assert status == 201
    preview = api.request("POST", f"/api/templates/{name}/preview", {"data": {"who": "<Ana>", "number": 7}})[2]
    assert preview["html"] == "<p>Hello <b>&lt;Ana&gt;</b></p>" and preview["subject"] == "Offer 7 received"
    status, headers, queued = api.request("POST", "/api/notifications", {
        "channel": "email", "to": "ana@example.com", "template": name, "data": {"who": "Ana", "number": 7},
        "idempotency_key": f"k-{name}"})
    assert status == 202, queued
    sent = wait_until(lambda: (lambda n: n if n["status"] == "sent" else None)(
        api.request("GET", headers["Location"])[2]), timeout=30)
    assert sent["attempts"] == 1
    [mail] = mailbox.to("ana@example.com")
    assert mail["Subject"] == "Offer 7 received" and mail["From"] == "intake@example.com"
    assert mail.get_body(("plain",)).get_content().strip() == "Hello Ana, offer 7 is in."
    assert "<b>Ana</b>" in mail.get_body(("html",)).get_content()
    again = api.request("POST", "/api/notifications", {
        "channel": "email", "to": "ana@example.com", "template": name, "data": {"who": "Ana", "number": 7},
        "idempotency_key": f"k-{name}"})
    assert again[0] == 200 and again[2]["id"] == queued["id"]
    other = api.request("POST", "/api/notifications", {
        "channel": "email", "to": "bob@example.com", "template": name, "data": {"who": "Bob", "number": 8},
        "idempotency_key": f"k-{name}"})
    assert other[0] == 409 and other[2]["error"]["code"] == "idempotency_key_reused"
    time.sleep(0.5)
    assert len(mailbox.to("ana@example.com")) == 1 and mailbox.to("bob@example.com") == []


@pytest.mark.parametrize("template,code", [
    ("Hello {{ missing_variable }}", "template_undefined_variable"),
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "template_unsafe"),
    ("{{ cycler.__init__.__globals__.os }}", "template_unsafe"),
    ("{% for %}", "template_syntax_error"),
])
def test_bad_templates_are_422_not_500(api, template, code):
    status, _, answer = api.request("POST", "/api/templates/preview", {"template": {"text": template}, "data": {}})
    assert status == 422 and answer["error"]["code"] in (code, "invalid_request"), answer
    status, _, answer = api.request("POST", "/api/notifications", {
        "channel": "email", "to": "x@example.com", "body": template})
    assert status == 422, answer


def test_large_templates_and_large_events_fit_in_storage(api):
    name = f"big-{uuid.uuid4().hex[:6]}"
    html = "<p>" + "x" * 90_000 + "{{ n }}</p>"
    assert api.request("POST", "/api/templates", {"name": name, "html": html})[0] == 201
    assert api.request("GET", f"/api/templates/{name}")[2]["html"] == html
    with Receiver() as receiver:
        subscribe(api, receiver, ["custom.big"])
        biggest = MAX_CUSTOM_DATA_BYTES - len('{"text":""}')
        publish(api, "custom.big", {"text": "y" * biggest})
        [hook] = wait_until(lambda: receiver.accepted, timeout=30)
        assert len(hook["payload"]["data"]["text"]) == biggest
        status, _, refused = api.request("POST", "/api/events", {"type": "custom.big", "data": {"text": "y" * biggest + "y"}})
        assert status == 422 and refused["error"]["details"][0]["field"] == "data"


def test_a_subject_with_a_line_break_is_sent_on_one_line(api, mailbox):
    status, headers, _ = api.request("POST", "/api/notifications", {
        "channel": "email", "to": "lines@example.com", "subject": "Re: {{ t }}", "body": "x",
        "data": {"t": "first\nBcc: everyone@example.com"}})
    assert status == 202
    notification(api, headers["Location"], "sent")
    [mail] = mailbox.to("lines@example.com")
    assert mail["Subject"] == "Re: first Bcc: everyone@example.com" and mail["Bcc"] is None


def test_a_refused_address_fails_at_once_without_retries(api, mailbox):
    status, headers, queued = api.request("POST", "/api/notifications", {
        "channel": "email", "to": "nobody@example.com", "subject": "Hi", "body": "text"})
    assert status == 202
    done = wait_until(lambda: (lambda n: n if n["status"] == "failed" else None)(
        api.request("GET", headers["Location"])[2]), timeout=30)
    assert done["attempts"] == 1 and done["error"]["code"] == "recipient_refused"


def notification(api: Http, location: str, status: str) -> dict:
    return wait_until(lambda: (lambda n: n if n["status"] == status else None)(api.request("GET", location)[2]),
                      timeout=30)


def test_sms_is_sent_and_a_recipient_over_the_hourly_budget_waits_instead_of_being_dropped(api, sms):
    number = f"+4915{uuid.uuid4().int % 10**9:09d}"
    locations = []
    for n in range(3):
        status, headers, _ = api.request("POST", "/api/notifications", {
            "channel": "sms", "to": number, "body": "Order {{ n }} shipped", "data": {"n": n}})
        assert status == 202
        locations.append(headers["Location"])
    for location in locations[:2]:
        notification(api, location, "sent")
    waiting = notification(api, locations[2], "waiting")
    assert waiting["attempts"] == 0
    sent = [m["form"]["Body"] for m in sms.messages if m["form"]["To"] == number]
    assert sorted(sent) == ["Order 0 shipped", "Order 1 shipped"]
    listed = api.request("GET", f"/api/notifications?channel=sms&to={number}")[2]["notifications"]
    assert sorted(n["status"] for n in listed) == ["sent", "sent", "waiting"]


def test_failed_offer_emits_offer_failed_and_job_failed(api, fake):
    with Receiver() as receiver:
        subscribe(api, receiver, ["offer.failed", "job.failed"])
        fake.script.append({"status": 400})
        status, _, job = api.request("POST", "/api/ingest", {"text": "Offer: 10 chairs at 20 EUR",
                                                             "metadata": {"ref": "A-1"}})
        assert status == 202
        events = wait_until(lambda: (lambda seen: seen if len(seen) == 2 else None)(
            {r["payload"]["type"]: r["payload"] for r in receiver.accepted}), timeout=30)
        for event in events.values():
            assert event["subject"] == job["job_id"] and event["data"]["metadata"] == {"ref": "A-1"}
            assert event["data"]["error"]["code"] and event["data"]["capability"] == "offers"


def test_document_processed_event_carries_the_merged_document(api, fake):
    from tests.integration.test_documents import REQUEST, answer_by_page

    with Receiver() as receiver:
        subscribe(api, receiver, ["document.*"])
        previous, fake.default = fake.default, answer_by_page
        try:
            status, _, queued = api.request("POST", "/api/process-document",
                                            {**REQUEST, "job_id": f"doc-{uuid.uuid4().hex[:8]}"})
            assert status == 202
            [hook] = wait_until(lambda: receiver.accepted, timeout=60)
        finally:
            fake.default = previous
        event = hook["payload"]
        assert event["type"] == "document.processed" and event["subject"] == queued["task_id"]
        assert event["data"]["result"]["pages"] == 3 and "RENTAL AGREEMENT" in event["data"]["result"]["text"]


def test_rule_actions_start_an_offer_job_and_pause_a_chat(api, fake):
    chat = f"1555{uuid.uuid4().int % 10**7:07d}@c.us"
    status, _, rule = api.request("POST", "/api/rules", {
        "name": "leads", "event": "custom.lead",
        "actions": [{"type": "start_job", "capability": "offer", "text": "{{ data.text }}"},
                    {"type": "pause_chat", "chat_id": "{{ data.chat }}"}]})
    assert status == 201, rule
    try:
        fake.script.append({"json": model_answer("whatsapp_en_terse")})
        routed = publish(api, "custom.lead", {"text": "500 boxes A4 paper at 31.50 USD", "chat": chat})
        assert routed["rules"] is True

        def offer_job():
            jobs = api.request("GET", "/api/jobs?limit=50")[2]["jobs"]
            return next((j for j in jobs if j["type"] == "offer_ingestion" and j["status"] == "done"
                         and j["result"].get("supplier") == model_answer("whatsapp_en_terse")["supplier"]), None)

        assert wait_until(offer_job, timeout=30)
        conversation = wait_until(lambda: (lambda c: c if c[0] == 200 and c[2].get("paused") else None)(
            api.request("GET", f"/api/conversations/{chat}")), timeout=30)
        assert conversation[2]["paused"] is True
    finally:
        api.request("DELETE", f"/api/rules/{rule['id']}")


def test_rule_fires_on_the_large_offer_and_not_on_the_small_one(api, fake, mailbox):
    with Receiver(CALLBACK_SECRET) as receiver:
        status, _, rule = api.request("POST", "/api/rules", {
            "name": "large offers", "event": "offer.parsed",
            "conditions": {"all": [{"field": "data.result.total_gross", "op": "gt", "value": 5000}]},
            "actions": [{"type": "notify", "channel": "email", "to": "{{ data.metadata.buyer_email }}",
                         "subject": "Large offer from {{ data.result.supplier }}",
                         "body": "Total {{ data.result.total_gross }} {{ data.result.currency }}"},
                        {"type": "webhook", "url": receiver.url}]})
        assert status == 201, rule
        try:
            jobs = {}
            for case, buyer in (("email_en_pdf_attachment", "big@example.com"), ("scan_es_image", "small@example.com")):
                fake.script.append({"json": model_answer(case)})
                status, _, job = api.request("POST", "/api/ingest", {
                    "file": {"name": "offer.eml" if case.startswith("email") else "quote.png",
                             "content_type": "message/rfc822" if case.startswith("email") else "image/png",
                             "content_base64": base64.b64encode(
                                 (FIXTURES / case / ("offer.eml" if case.startswith("email") else "quote.png"))
                                 .read_bytes()).decode()},
                    "metadata": {"buyer_email": buyer}})
                assert status == 202, job
                jobs[case] = finished(api, job["job_id"])
                assert jobs[case]["status"] == "done", jobs[case]
            [mail] = wait_until(lambda: mailbox.to("big@example.com"), timeout=30)
            assert mail["Subject"] == "Large offer from " + jobs["email_en_pdf_attachment"]["data"]["supplier"]
            assert "7544.52 GBP" in mail.get_body(("plain",)).get_content()
            [hook] = wait_until(lambda: receiver.accepted, timeout=30)
            assert hook["payload"]["type"] == "offer.parsed"
            assert hook["payload"]["subject"] == jobs["email_en_pdf_attachment"]["job_id"]
            time.sleep(1.5)
            assert mailbox.to("small@example.com") == [] and len(receiver.accepted) == 1
        finally:
            api.request("DELETE", f"/api/rules/{rule['id']}")


def test_rules_run_in_priority_order_and_stop_processing_ends_the_run(api):
    def rule(name: str, priority: int, stop: bool = False) -> dict:
        return {"name": name, "event": "custom.*", "priority": priority, "stop_processing": stop,
                "conditions": {"field": "data.amount", "op": "gte", "value": 10},
                "actions": [{"type": "webhook", "url": "https://example.com/{{ data.amount }}"}]}

    ids = [api.request("POST", "/api/rules", rule(n, p, s))[2]["id"]
           for n, p, s in (("third", 30, False), ("first", 10, False), ("second", 20, True))]
    try:
        answer = api.request("POST", "/api/rules/test", {"event": {"type": "custom.pay", "data": {"amount": 12}}})[2]
        assert [r["rule"] for r in answer["fired"]] == ["first", "second"]
        assert answer["fired"][0]["actions"][0]["url"] == "https://example.com/12"
        below = api.request("POST", "/api/rules/test", {"event": {"type": "custom.pay", "data": {"amount": 3}}})[2]
        assert below["fires"] is False
    finally:
        for rule_id in ids:
            api.request("DELETE", f"/api/rules/{rule_id}")


def test_the_dry_run_shows_the_message_a_notification_would_send_and_the_actions_that_would_fail(api):
    rule = {"name": "dry", "event": "custom.*", "actions": [
        {"type": "notify", "channel": "email", "to": "ops@example.com", "subject": "Order {{ data.n }}",
         "body": "Order {{ data.n }} came."},
        {"type": "notify", "channel": "sms", "to": "+4915112345678", "html": "<b>{{ data.n }}</b>"},
        {"type": "pause_chat", "chat_id": "{{ data.chat }}"},
        {"type": "start_job", "capability": "offer", "text": "Offer {{ data.n }}"}]}
    event = {"type": "custom.order", "data": {"n": 7, "chat": "not/a/chat", "metadata": {"rule": "rule:x:y:1"}}}
    status, _, answer = api.request("POST", "/api/rules/test", {"event": event, "rule": rule})
    assert status == 200, answer
    email, sms, pause, start = answer["fired"][0]["actions"]
    assert email["message"] == {"subject": "Order 7", "text": "Order 7 came.", "html": ""} and "error" not in email
    assert sms["error"]["code"] == "empty_message"  # an SMS has no HTML: the real event would fail the same way
    assert pause["error"]["code"] == "invalid_chat_id"
    assert start["error"]["code"] == "rule_chain_refused"


def test_invalid_rule_is_rejected_with_the_path_of_the_error(api):
    status, _, answer = api.request("POST", "/api/rules", {
        "name": "bad", "event": "offer.parsed",
        "conditions": {"any": [{"field": "data.result.total_gross", "op": "gt", "value": 1},
                               {"field": "data.x", "op": "between", "value": 2}]},
        "actions": [{"type": "notify", "channel": "email", "to": "a@example.com", "body": "x"}]})
    assert status == 422
    assert [d["field"] for d in answer["error"]["details"]] == ["conditions.any.1.op"]


@pytest.fixture()
def patient_api(azurite_module):
    """A host whose retries span minutes, long enough to outlast a receiver that is down for a while."""
    process = DevhostProcess(azurite_module.connection_string, {
        "DEVHOST_RPC_PORT": str(free_port()), "AI_PROVIDER": "offline", "CALLBACK_ALLOWED_HOSTS": "127.0.0.1",
        "WEBHOOK_RETRY_SCHEDULE": "2s,4s,8s,15s,30s,60s,120s", "LOG_LEVEL": "WARNING",
        "DEVHOST_LOG_LEVEL": "WARNING"}).start()
    yield Http(process.base_url, FUNCTION_KEY)
    process.stop()


def test_a_thousand_events_to_three_subscriptions_with_one_receiver_down_lose_and_double_nothing(patient_api):
    api = patient_api
    down_port = free_port()
    with Receiver() as first, Receiver() as second:
        subscriptions = [subscribe(api, first, ["custom.load"]), subscribe(api, second, ["custom.load"])]
        status, _, third = api.request("POST", "/api/webhooks/subscriptions", {
            "url": f"http://127.0.0.1:{down_port}/hook", "events": ["custom.load"]})
        assert status == 201
        subscriptions.append(third)
        ids = [f"load-{uuid.uuid4().hex[:10]}-{n}" for n in range(1000)]
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(lambda i: publish(api, "custom.load", {"n": i}, event_id=i), ids))
        with Receiver(third["secret"], port=down_port) as revived:
            expected = set(ids)
            wait_until(lambda: all({r["payload"]["id"] for r in rx.accepted} >= expected
                                   for rx in (first, second, revived)), timeout=400, interval=1)
            time.sleep(2)
            for rx in (first, second, revived):
                accepted_ids = [r["payload"]["id"] for r in rx.accepted]
                assert sorted(accepted_ids) == sorted(ids)  # every event once: none lost, none twice


def test_a_rule_on_the_events_of_the_jobs_it_starts_starts_one_and_no_chain(api, fake):
    marker = uuid.uuid4().hex[:8]
    status, _, rule = api.request("POST", "/api/rules", {
        "name": "again", "event": "offer.*",
        "conditions": {"any": [{"field": "data.metadata.marker", "op": "eq", "value": marker},
                               {"field": "data.metadata.rule", "op": "exists"}]},  # and the jobs it starts
        "actions": [{"type": "start_job", "capability": "offer", "text": "Please read {{ data.job_id }} again"}]})
    assert status == 201, rule
    previous = fake.default
    fake.default = {"json": model_answer("whatsapp_en_terse")}
    try:
        status, _, first = api.request("POST", "/api/ingest", {"text": "500 boxes A4 paper at 31.50 USD",
                                                               "metadata": {"marker": marker}})
        assert status == 202 and finished(api, first["job_id"])["status"] == "done"

        def rule_started() -> list[dict]:  # the job the rule started: its metadata names the rule
            jobs = api.request("GET", "/api/jobs?limit=200")[2]["jobs"]
            return [j for j in jobs if j["type"] == "offer_ingestion" and j["created_at"] >= first["created_at"]
                    and j["job_id"] != first["job_id"]]

        [second] = wait_until(rule_started, timeout=30)
        assert finished(api, second["job_id"])["status"] == "done"
        time.sleep(4)  # the second job's event was evaluated: a chain would have started a third by now
        assert len(rule_started()) == 1
    finally:
        fake.default = previous
        api.request("DELETE", f"/api/rules/{rule['id']}")


@pytest.mark.parametrize("chat", ["", "a/b#c?d", "x" * 1500])
def test_a_pause_chat_action_refuses_a_chat_id_the_pause_route_would(api, chat):
    status, _, rule = api.request("POST", "/api/rules", {
        "name": "pause", "event": "custom.pause-me", "actions": [{"type": "pause_chat", "chat_id": "{{ data.chat }}"}]})
    assert status == 201, rule
    try:
        routed = publish(api, "custom.pause-me", {"chat": chat})
        job = wait_until(lambda: (j := api.request("GET", f"/api/jobs/rules_{routed['event']['id']}")[2])
                         .get("status") in ("done", "failed") and j, timeout=30)
        assert job["status"] == "done", job  # the other actions' outcomes are kept
        [action] = job["result"]["actions"]
        assert not action["ok"] and action["error"]["code"] == "invalid_chat_id"
        listed = [c["chat_id"] for c in api.request("GET", "/api/conversations")[2]["conversations"]]
        assert chat not in listed
    finally:
        api.request("DELETE", f"/api/rules/{rule['id']}")


@pytest.mark.parametrize("body,code", [
    ({"channel": "sms", "to": "+4915112345678", "html": "<b>hi</b>"}, "empty_message"),
    ({"channel": "sms", "to": "+4915112345678", "body": "{{ 'x' * 2000 }}"}, "message_too_long"),
    ({"channel": "email", "to": "ana@example.com", "subject": "{{ 'S' * 5000 }}", "body": "hi"}, "subject_too_long"),
])
def test_a_notification_its_channel_cannot_send_as_rendered_is_a_422(api, sms, body, code):
    status, _, refused = api.request("POST", "/api/notifications", body)
    assert status == 422 and refused["error"]["code"] == code, refused


def test_notifications_are_listed_by_a_known_channel_only(api):
    status, _, refused = api.request("GET", "/api/notifications?channel=fax")
    assert status == 400 and refused["error"]["code"] == "invalid_channel"
    assert api.request("GET", "/api/notifications?channel=sms")[0] == 200
