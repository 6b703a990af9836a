"""WAHA event triage over every fixture: what the bot answers, why it ignores the rest, freshness and dedup."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from shared.errors import BadRequest, Unprocessable
from shared.whatsapp.events import (MAX_TEXT_CHARS, Envelope, checked_chat_id, classify, dedup_key, incoming_message,
                                    is_fresh, parse_envelope)

FIXTURES = Path(__file__).resolve().parents[3].parent / "shared" / "fixtures" / "waha"
EVENT_FILES = sorted(p.name for p in FIXTURES.glob("*.json") if p.name != "hmac-vectors.json")

# file -> (answer, reason when ignored / kind when answered)
EXPECTED = {
    "message.text.direct.json": (True, "text"),
    "message.reply.json": (True, "text"),
    "message.voice-note.json": (True, "audio"),
    "message.document-pdf.json": (True, "document"),
    "message.group.json": (False, "group"),
    "message.status-broadcast.json": (False, "status_broadcast"),
    "message.channel-newsletter.json": (False, "channel"),
    "message-any.from-me-api.json": (False, "own_send_echo"),
    "message.reaction.json": (False, "reaction"),
    "message.reaction.removed.json": (False, "reaction"),
    "message.ack.json": (False, "ack"),
    "message.ack.group.json": (False, "ack"),
    "message.edited.json": (False, "edit"),
    "message.revoked.json": (False, "revoke"),
    "session.status.working.json": (False, "session_event"),
    "session.status.failed.json": (False, "session_event"),
    "message.media-not-downloaded.json": (False, "media_not_downloaded"),
    "message.media-download-error.json": (False, "media_download_failed"),
}


def raw(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def data(name: str) -> dict:
    return json.loads(raw(name))


def envelope(name: str) -> Envelope:
    return parse_envelope(raw(name))


def test_every_fixture_has_an_expected_classification():
    assert sorted(EXPECTED) == EVENT_FILES


@pytest.mark.parametrize("name", EVENT_FILES)
def test_fixture_is_classified_as_expected(name):
    answer, why = EXPECTED[name]
    decision = classify(envelope(name))
    assert decision.answer is answer
    if answer:
        assert (decision.kind, decision.reason) == (why, None)
        assert decision.message is not None
    else:
        assert (decision.reason, decision.kind) == (why, None)


@pytest.mark.parametrize("name,needs", [("message.text.direct.json", False), ("message.reply.json", False),
                                        ("message.voice-note.json", True), ("message.document-pdf.json", True)])
def test_only_media_answers_need_a_download(name, needs):
    assert classify(envelope(name)).needs_media is needs


def test_direct_text_is_normalised():
    message = classify(envelope("message.text.direct.json")).message
    assert message.model_dump() == {
        "session": "default", "chat_id": "12025550143@c.us", "sender": "12025550143@c.us",
        "message_id": "false_12025550143@c.us_3EB0A1B2C3D4E5F60001",
        "text": "Hi! Do you still have the 2-bedroom offer from last week?",
        "media_url": None, "media_mimetype": None, "media_filename": None, "reply_to_id": None,
        "timestamp": 1767261600}


def test_voice_note_carries_its_media_url_and_opus_mimetype():
    message = classify(envelope("message.voice-note.json")).message
    assert message.media_url.endswith("_3EB0A1B2C3D4E5F60005.oga")
    assert message.media_mimetype == "audio/ogg; codecs=opus"
    assert (message.media_filename, message.text) == (None, "")


def test_pdf_keeps_filename_and_caption():
    message = classify(envelope("message.document-pdf.json")).message
    assert (message.media_filename, message.media_mimetype, message.text) == (
        "offer-2026-001.pdf", "application/pdf", "Here is the signed offer")


def test_reply_carries_the_quoted_message_id():
    message = classify(envelope("message.reply.json")).message
    assert message.reply_to_id == "true_12025550143@c.us_3EB0A1B2C3D4E5F60004"


def test_group_message_names_the_group_as_chat_and_the_participant_as_sender():
    message = incoming_message(envelope("message.group.json"))
    assert (message.chat_id, message.sender) == ("120363000000000001@g.us", "100000000000001@lid")


def test_own_message_in_message_event_is_ignored_as_from_me():
    body = data("message-any.from-me-api.json")
    body["event"], body["payload"]["source"] = "message", "app"
    decision = classify(Envelope.model_validate(body))
    assert (decision.answer, decision.reason) == (False, "from_me")
    assert decision.message.chat_id == "12025550143@c.us"


def test_message_any_from_a_customer_is_answered_and_shares_the_dedup_key_of_message():
    direct = data("message.text.direct.json")
    echo = copy.deepcopy(direct) | {"event": "message.any", "id": "evt_other"}
    assert classify(Envelope.model_validate(echo)).answer is True
    assert dedup_key(Envelope.model_validate(echo)) == dedup_key(Envelope.model_validate(direct))


def _with_media(mimetype: str, **media) -> Envelope:
    body = data("message.text.direct.json")
    body["payload"].update(body="", hasMedia=True, media={"url": "https://waha.example.test/api/files/x",
                                                          "mimetype": mimetype, "filename": None,
                                                          "error": None, **media})
    return Envelope.model_validate(body)


@pytest.mark.parametrize("mimetype,kind", [("image/jpeg", "image"), ("image/png", "image"),
                                           ("audio/mpeg", "audio"), ("APPLICATION/PDF", "document")])
def test_supported_media_is_answered(mimetype, kind):
    decision = classify(_with_media(mimetype))
    assert (decision.answer, decision.kind, decision.needs_media) == (True, kind, True)


@pytest.mark.parametrize("mimetype", ["video/mp4", "application/zip", ""])
def test_unsupported_media_is_ignored(mimetype):
    assert classify(_with_media(mimetype)).reason == "unsupported_media"


def test_media_without_url_counts_as_failed_download():
    assert classify(_with_media("image/jpeg", url=None)).reason == "media_download_failed"


@pytest.mark.parametrize("chat,reason", [("123@broadcast", "broadcast_list"), ("weird-id", "unsupported_chat")])
def test_broadcast_lists_and_unknown_chat_kinds_are_ignored(chat, reason):
    body = data("message.text.direct.json")
    body["payload"]["from"] = chat
    assert classify(Envelope.model_validate(body)).reason == reason


def test_direct_message_from_a_linked_id_is_answered():
    body = data("message.text.direct.json")
    body["payload"]["from"] = "100000000000001@lid"
    assert classify(Envelope.model_validate(body)).answer is True


def test_message_without_text_or_media_is_ignored():
    body = data("message.text.direct.json")
    body["payload"]["body"] = "   "
    assert classify(Envelope.model_validate(body)).reason == "empty_message"


@pytest.mark.parametrize("event", ["presence.update", "message.waiting", "call.received", "group.v2.join"])
def test_other_events_are_ignored(event):
    assert classify(Envelope(event=event, session="default")).reason == "unsupported_event"


def test_message_payload_without_id_is_ignored_as_malformed():
    body = data("message.text.direct.json")
    del body["payload"]["id"]
    assert classify(Envelope.model_validate(body)).reason == "malformed_payload"


def test_envelope_of_older_waha_without_id_timestamp_metadata_me_parses():
    body = data("message.text.direct.json")
    for key in ("id", "timestamp", "metadata", "me", "environment"):
        del body[key]
    parsed = parse_envelope(json.dumps(body).encode())
    assert (parsed.id, parsed.timestamp, parsed.metadata, parsed.me) == (None, None, {}, None)
    assert classify(parsed).answer is True


def test_unknown_keys_are_tolerated_at_every_level():
    body = data("message.text.direct.json")
    body["worker"] = {"id": "w-1"}
    body["me"]["lid"] = "100000000000009@lid"
    body["payload"]["somethingNew"] = [1, 2]
    assert classify(parse_envelope(json.dumps(body))).answer is True


def test_null_metadata_and_payload_read_as_empty():
    parsed = parse_envelope(b'{"event": "session.status", "session": "s", "metadata": null, "payload": null}')
    assert (parsed.metadata, parsed.payload) == ({}, {})


def test_null_me_is_tolerated():
    parsed = envelope("session.status.failed.json")
    assert parsed.me is None
    body = data("session.status.failed.json") | {"me": None}
    assert Envelope.model_validate(body).me is None


def test_metadata_is_kept():
    assert envelope("message.text.direct.json").metadata == {"tenant.id": "tenant-demo", "app.env": "test"}


def test_invalid_json_is_a_bad_request():
    with pytest.raises(BadRequest) as err:
        parse_envelope(b"{not json")
    assert err.value.code == "invalid_json"
    with pytest.raises(BadRequest):
        parse_envelope(b"[1, 2]")


def test_envelope_without_event_or_session_is_unprocessable():
    with pytest.raises(Unprocessable) as err:
        parse_envelope(b'{"payload": {}}')
    assert err.value.code == "invalid_waha_event"
    assert {d["field"] for d in err.value.details} == {"event", "session"}


def test_incoming_message_of_a_non_message_event_is_refused():
    with pytest.raises(Unprocessable):
        incoming_message(envelope("message.ack.json"))


@pytest.mark.parametrize("offset_s,fresh", [(0, True), (299, True), (300, True), (301, False), (3600, False),
                                            (-299, True), (-301, False)])
def test_freshness_uses_the_signed_body_timestamp_in_milliseconds(offset_s, fresh):
    event = envelope("message.text.direct.json")
    assert is_fresh(event, event.timestamp + offset_s * 1000) is fresh


def test_freshness_honours_a_custom_max_age():
    event = envelope("message.text.direct.json")
    assert is_fresh(event, event.timestamp + 61_000, max_age_s=60) is False
    assert is_fresh(event, event.timestamp + 59_000, max_age_s=60) is True


def test_freshness_falls_back_to_the_message_seconds_when_the_envelope_has_no_timestamp():
    body = data("message.text.direct.json")
    del body["timestamp"]
    event = Envelope.model_validate(body)
    assert is_fresh(event, 1767261600_000 + 10_000) is True
    assert is_fresh(event, 1767261600_000 + 400_000) is False


@pytest.mark.parametrize("stamp", [1e308, -5, 1e11])
def test_a_message_time_beyond_any_date_is_no_time(stamp):
    body = data("message.text.direct.json")
    del body["timestamp"]
    body["payload"]["timestamp"] = stamp
    event = Envelope.model_validate(body)
    assert is_fresh(event, 1767261600_000) is False  # no time to judge by: refused as stale, not a 500
    assert incoming_message(Envelope.model_validate(data("message.text.direct.json") | {
        "payload": body["payload"]})).timestamp is None


def test_nan_or_infinity_in_a_signed_event_is_a_400():
    text = raw("message.text.direct.json").decode().replace('"timestamp": 1767261600,', '"timestamp": NaN,', 1)
    assert "NaN" in text
    with pytest.raises(BadRequest):
        parse_envelope(text.encode())


def test_event_without_any_timestamp_is_not_fresh():
    assert is_fresh(Envelope(event="message", session="s", payload={"id": "x"}), 1767261600_000) is False


def test_dedup_key_is_session_and_message_id():
    assert dedup_key(envelope("message.text.direct.json")) == "default:false_12025550143@c.us_3EB0A1B2C3D4E5F60001"


def test_dedup_key_differs_between_sessions():
    body = data("message.text.direct.json")
    other = Envelope.model_validate(body | {"session": "second"})
    assert dedup_key(other) != dedup_key(Envelope.model_validate(body))


def test_events_without_a_message_have_no_dedup_key():
    assert dedup_key(envelope("session.status.working.json")) is None
    assert dedup_key(envelope("message.ack.json")) is None


@pytest.mark.parametrize("field,value", [("id", "false_123@c.us_AB\x00C"), ("from", "123\x7f@c.us"),
                                         ("id", "x" * 300), ("from", "1" * 2000 + "@c.us")])
def test_ids_that_cannot_be_table_keys_make_the_payload_malformed(field, value):
    body = data("message.text.direct.json")
    body["payload"][field] = value
    assert classify(Envelope.model_validate(body)).reason == "malformed_payload"


def test_a_session_name_with_control_characters_is_refused():
    body = data("message.text.direct.json")
    body["session"] = "default\x01"
    with pytest.raises(Unprocessable):
        parse_envelope(json.dumps(body))


def test_a_very_long_text_is_kept_to_its_first_characters():
    body = data("message.text.direct.json")
    body["payload"]["body"] = "ask " * 1_000_000
    message = classify(Envelope.model_validate(body)).message
    assert len(message.text) == MAX_TEXT_CHARS and message.text.startswith("ask ask")


def test_a_lone_surrogate_in_a_signed_text_is_kept_as_a_replacement_character():
    text = raw("message.text.direct.json").replace(b'"body": "', b'"body": "\\ud800 and \\ud83d\\ude00 ', 1)
    message = classify(parse_envelope(text)).message
    assert message.text.startswith("\ufffd and \U0001F600 ")
    json.dumps(message.text, ensure_ascii=False).encode()  # a reply that reads it back can be sent


def test_chat_ids_given_in_requests_are_checked():
    assert checked_chat_id("491511234567@c.us") == "491511234567@c.us"
    for bad in ("\x7f", "a" * 257, "", "491511234567@c.us\n"):
        with pytest.raises(BadRequest):
            checked_chat_id(bad)


@pytest.mark.parametrize("chat", ["1/2@c.us", "1\\2@c.us", "1#2@c.us", "1?2@c.us"])
def test_chat_ids_holding_key_characters_are_malformed_not_stored_under_another_key(chat):
    body = data("message.text.direct.json")
    body["payload"]["from"] = chat
    assert classify(Envelope.model_validate(body)).reason == "malformed_payload"
