"""WAHA webhook events: the envelope, which events the bot answers and why not, and the message it answers."""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from ..errors import BadRequest, Unprocessable, invalid_body, parse_json_body

MESSAGE_EVENTS = ("message", "message.any")

MessageKind = Literal["text", "audio", "document", "image"]
IgnoreReason = Literal[
    "session_event", "reaction", "ack", "edit", "revoke", "unsupported_event", "malformed_payload",
    "from_me", "own_send_echo", "group", "status_broadcast", "channel", "broadcast_list", "unsupported_chat",
    "media_not_downloaded", "media_download_failed", "unsupported_media", "empty_message",
]

_IGNORED_EVENTS: dict[str, IgnoreReason] = {
    "session.status": "session_event",
    "message.reaction": "reaction",
    "message.ack": "ack",
    "message.edited": "edit",
    "message.revoked": "revoke",
}
# 1:1 chats: phone ids, hidden linked ids (WhatsApp is moving 1:1 chats to them too) and the engine form.
_DIRECT_SUFFIXES = ("@c.us", "@lid", "@s.whatsapp.net")

# Session, chat and message ids become table keys: none of / \\ # ? or control characters (WhatsApp's never hold
# them), and far below a key's 1 KiB.
_ID_PATTERN = r"^[^\x00-\x1f\x7f-\x9f/\\#?]{1,256}$"
WahaId = Annotated[str, StringConstraints(pattern=_ID_PATTERN)]
MAX_TEXT_CHARS = 8_000  # of a message kept and answered: ten of them with their answers fit a conversation's row
MAX_TIMESTAMP_S = 1e11  # seconds: the year 5138; a later message time (1e308, say) is no time


def checked_chat_id(value: str) -> str:
    """A chat id given in a request (path or query): 400 when it cannot be one."""
    if not re.fullmatch(_ID_PATTERN, value):
        raise BadRequest("chat_id must be 1-256 characters without / \\ # ? or control characters.",
                         code="invalid_chat_id")
    return value


class _Tolerant(BaseModel):
    # WAHA adds fields between versions (e.g. `worker.id` in 2026.1.4); unknown keys must not reject an event.
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class Me(_Tolerant):
    id: str | None = None
    push_name: str | None = Field(None, alias="pushName")


class Environment(_Tolerant):
    version: str | None = None
    engine: str | None = None
    tier: str | None = None
    browser: str | None = None


class Envelope(_Tolerant):
    """The body of every WAHA webhook POST. `timestamp` is in milliseconds; `payload` depends on `event`."""

    id: str | None = None
    timestamp: int | None = None
    event: str
    session: WahaId
    metadata: dict[str, Any] = Field(default_factory=dict)
    me: Me | None = None
    payload: dict[str, Any] = Field(default_factory=dict)
    engine: str | None = None
    environment: Environment | None = None

    @field_validator("metadata", "payload", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value


class Media(_Tolerant):
    url: Annotated[str, StringConstraints(max_length=4096)] | None = None
    mimetype: Annotated[str, StringConstraints(max_length=256)] | None = None
    filename: str | None = None
    error: Any = None  # shape undocumented; only "set or not" matters

    @field_validator("filename")
    @classmethod
    def _short_name(cls, value: str | None) -> str | None:
        return value[:256] if value else value


class ReplyTo(_Tolerant):
    id: str | None = None  # serialized or bare, depending on the engine
    participant: str | None = None
    body: str | None = None


class MessagePayload(_Tolerant):
    """The documented fields of a `message` / `message.any` payload; `_data` (engine internals) is left out."""

    id: WahaId
    timestamp: float | None = None  # seconds
    from_: WahaId | None = Field(None, alias="from")
    from_me: bool = Field(False, alias="fromMe")
    source: str | None = None
    to: WahaId | None = None
    participant: WahaId | None = None
    author: WahaId | None = None
    body: str | None = None
    has_media: bool = Field(False, alias="hasMedia")
    media: Media | None = None
    reply_to: ReplyTo | None = Field(None, alias="replyTo")

    @field_validator("body")
    @classmethod
    def _bounded(cls, value: str | None) -> str | None:
        return value[:MAX_TEXT_CHARS] if value else value

    @field_validator("timestamp")
    @classmethod
    def _plausible(cls, value: float | None) -> float | None:
        """A phone's clock may be wrong, but not beyond any date (1e308, NaN): such a time is no time at all."""
        return value if value is not None and 0 <= value < MAX_TIMESTAMP_S else None


class IncomingMessage(BaseModel):
    """One chat message, normalised: what the rest of the assistant works with."""

    model_config = ConfigDict(extra="forbid")

    session: str
    chat_id: str
    sender: str
    message_id: str
    text: str = ""
    media_url: str | None = None
    media_mimetype: str | None = None
    media_filename: str | None = None
    reply_to_id: str | None = None
    timestamp: float | None = Field(None, description="Unix seconds, as the sender's phone stamped it")


class Decision(BaseModel):
    """Whether the bot answers an event; `reason` says why not, `kind` what it answers."""

    model_config = ConfigDict(extra="forbid")

    answer: bool
    reason: IgnoreReason | None = None
    kind: MessageKind | None = None
    needs_media: bool = False
    message: IncomingMessage | None = None


def parse_envelope(raw_body: bytes | str) -> Envelope:
    return parse_json_body(raw_body, Envelope, "The WAHA event", "invalid_waha_event")


def message_payload(envelope: Envelope) -> MessagePayload:
    if envelope.event not in MESSAGE_EVENTS:
        raise Unprocessable(f"A {envelope.event} event carries no chat message.", code="not_a_message_event")
    try:
        return MessagePayload.model_validate(envelope.payload)
    except ValidationError as exc:
        raise invalid_body(exc, "The message payload", "invalid_waha_message") from None


def incoming_message(envelope: Envelope) -> IncomingMessage:
    """The message of a `message`/`message.any` event; `Unprocessable` for any other event."""
    return _normalise(envelope.session, message_payload(envelope))


def _normalise(session: str, payload: MessagePayload) -> IncomingMessage:
    chat = (payload.to if payload.from_me else payload.from_) or ""
    # In groups and Status `from` is the chat and the person is `participant` (or `author`).
    sender = payload.participant or payload.author or payload.from_ or ""
    media = payload.media
    return IncomingMessage(
        session=session, chat_id=chat, sender=sender, message_id=payload.id, text=payload.body or "",
        media_url=media.url if media else None, media_mimetype=media.mimetype if media else None,
        media_filename=media.filename if media else None,
        reply_to_id=payload.reply_to.id if payload.reply_to else None, timestamp=payload.timestamp)


def _chat_reason(chat_id: str) -> IgnoreReason | None:
    if chat_id == "status@broadcast":
        return "status_broadcast"
    if chat_id.endswith("@g.us"):
        return "group"
    if chat_id.endswith("@newsletter"):
        return "channel"
    if chat_id.endswith("@broadcast"):
        return "broadcast_list"
    if not chat_id.endswith(_DIRECT_SUFFIXES):
        return "unsupported_chat"
    return None


def _media_kind(mimetype: str) -> MessageKind | None:
    base = mimetype.split(";")[0].strip().lower()
    if base.startswith("audio/"):
        return "audio"
    if base == "application/pdf":
        return "document"
    if base.startswith("image/"):
        return "image"
    return None


def _ignore(reason: IgnoreReason, message: IncomingMessage | None = None) -> Decision:
    return Decision(answer=False, reason=reason, message=message)


def classify(envelope: Envelope) -> Decision:
    """Answer direct messages from people (text, voice/audio, PDF, image); ignore everything else, saying why."""
    if envelope.event in _IGNORED_EVENTS:
        return _ignore(_IGNORED_EVENTS[envelope.event])
    if envelope.event not in MESSAGE_EVENTS:
        return _ignore("unsupported_event")
    try:
        payload = message_payload(envelope)
    except Unprocessable:
        return _ignore("malformed_payload")
    message = _normalise(envelope.session, payload)
    if payload.from_me:
        # `message.any` echoes what we send through the API; answering it would loop the bot on itself.
        return _ignore("own_send_echo" if payload.source == "api" else "from_me", message)
    chat_reason = _chat_reason(message.chat_id)
    if chat_reason:
        return _ignore(chat_reason, message)
    if payload.has_media:
        media = payload.media
        if media is None:
            # WAHA skipped the download (WHATSAPP_DOWNLOAD_MEDIA / FILES_MIMETYPES); nothing to read.
            return _ignore("media_not_downloaded", message)
        if media.error is not None or not media.url:
            return _ignore("media_download_failed", message)
        kind = _media_kind(media.mimetype or "")
        if kind is None:
            return _ignore("unsupported_media", message)
        return Decision(answer=True, kind=kind, needs_media=True, message=message)
    if not message.text.strip():
        # Locations, contacts, polls and the like arrive with an empty body.
        return _ignore("empty_message", message)
    return Decision(answer=True, kind="text", message=message)


def event_time_ms(envelope: Envelope) -> int | None:
    """When WAHA produced the event; older builds send no envelope timestamp, then the message's own time."""
    if envelope.timestamp is not None:
        return envelope.timestamp
    stamp = envelope.payload.get("timestamp")
    if isinstance(stamp, (int, float)) and not isinstance(stamp, bool) and 0 <= stamp < MAX_TIMESTAMP_S:
        return int(stamp * 1000)
    return None


def is_fresh(envelope: Envelope, now_ms: int, max_age_s: float = 300) -> bool:
    """True when the event's time is within `max_age_s` of now, either way.

    The body's timestamp is covered by the HMAC, so a replayed old body fails here; the
    `X-Webhook-Timestamp` header is not signed and proves nothing. No timestamp at all fails too.
    """
    produced = event_time_ms(envelope)
    if produced is None:
        return False
    return abs(now_ms - produced) <= max_age_s * 1000


def dedup_key(envelope: Envelope) -> str | None:
    """`<session>:<message id>`, the same for `message` and `message.any` and for every WAHA retry."""
    if envelope.event in MESSAGE_EVENTS:
        message_id = envelope.payload.get("id")
        if isinstance(message_id, str) and message_id:
            return f"{envelope.session}:{message_id}"
    return None
