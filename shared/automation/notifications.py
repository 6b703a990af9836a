"""Notifications: e-mail over SMTP or ACS, SMS through an HTTP provider, WhatsApp through WAHA; one record each."""
from __future__ import annotations

import re
from typing import Any, Literal, Protocol, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..blocking import in_thread
from ..config import Settings
from ..errors import DeliveryError, Unprocessable
from .templates import Rendered

Channel = Literal["email", "sms", "whatsapp"]
NotificationStatus = Literal["queued", "waiting", "sent", "failed"]
NOTIFICATION_STATUSES: tuple[str, ...] = get_args(NotificationStatus)
_EMAIL = re.compile(r"^[^@\s<>\"',;]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9-]{1,63})+$")
_PHONE = re.compile(r"^\+?[1-9]\d{6,14}$")


class NotificationIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    channel: Channel
    to: str = Field(min_length=3, max_length=320, description="E-mail address, or phone number in E.164")
    template: str | None = Field(None, description="Name of a stored template")
    subject: str | None = Field(None, max_length=500, description="Jinja2, when no template is named")
    body: str | None = Field(None, max_length=50_000, description="Jinja2 text body, when no template is named")
    html: str | None = Field(None, max_length=200_000, description="Jinja2 HTML body (e-mail)")
    data: dict[str, Any] = Field(default_factory=dict, description="Variables of the template")
    idempotency_key: str | None = Field(None, max_length=200, description="The same key sends once")

    @model_validator(mode="after")
    def _content(self) -> "NotificationIn":
        if self.template is None and not (self.body or self.html):
            raise ValueError("name a template, or give a body")
        if self.template is not None and (self.body or self.html or self.subject):
            raise ValueError("give either a template or subject/body, not both")
        if self.channel == "email" and not _EMAIL.match(self.to):
            raise ValueError(f"'{self.to}' is not an e-mail address")
        if self.channel != "email" and not _PHONE.match(re.sub(r"[\s().-]", "", self.to)):
            raise ValueError(f"'{self.to}' is not a phone number (E.164, e.g. +4915112345678)")
        return self

    @field_validator("to")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if any(c in value for c in "\r\n"):
            raise ValueError("the recipient must be one line")
        return value


MAX_SMS_CHARS = 1600  # what SMS providers (Twilio) take in one message
MAX_SUBJECT_CHARS = 998  # a header line (RFC 5322)


def check_content(channel: str, content: Rendered) -> Rendered:
    """What the channel can send, as rendered: SMS and WhatsApp send the text body (an HTML-only message would go
    out empty), an SMS at most `MAX_SMS_CHARS`, an e-mail subject one header line."""
    if channel != "email" and not content.text.strip():
        raise Unprocessable(f"A {channel} message sends the text body, and this one renders none (an HTML body is "
                            "for e-mail).", code="empty_message")
    if channel == "sms" and len(content.text) > MAX_SMS_CHARS:
        raise Unprocessable(f"The SMS renders {len(content.text):,} characters; at most {MAX_SMS_CHARS:,} are sent.",
                            code="message_too_long")
    if channel == "email" and len(content.subject) > MAX_SUBJECT_CHARS:
        raise Unprocessable(f"The subject renders {len(content.subject):,} characters; at most {MAX_SUBJECT_CHARS}.",
                            code="subject_too_long")
    return content


class Notification(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    channel: Channel
    to: str
    content: Rendered
    template: str | None = None
    status: NotificationStatus = "queued"
    attempts: int = 0
    error: dict | None = None
    created_at: str
    sent_at: str | None = None
    source: str = Field("api", description="api, or the rule that sent it")
    fingerprint: str | None = None  # of the request: the same idempotency key with another body is a 409

    def public(self) -> dict:
        return self.model_dump(exclude={"fingerprint"})


def recipient_key(channel: str, to: str) -> str:
    return f"{channel}:{to.lower() if channel == 'email' else re.sub(r'[^0-9]', '', to)}"


class Sender(Protocol):
    async def send(self, to: str, content: Rendered, key: str | None = None) -> None:
        """`key` names the notification, for services that run a send once per key."""


class SmtpSender:
    """E-mail through SMTP; 5xx answers about the recipient are permanent, the rest is retried."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def send(self, to: str, content: Rendered, key: str | None = None) -> None:
        await in_thread(self._send, to, content)

    def _send(self, to: str, content: Rendered) -> None:
        import smtplib
        import ssl
        from email.message import EmailMessage

        s = self.settings
        if not s.smtp_host or not s.email_from:
            raise DeliveryError("E-mail is not configured (SMTP_HOST, EMAIL_FROM).", code="email_not_configured")
        message = EmailMessage()
        try:
            message["From"], message["To"], message["Subject"] = s.email_from, to, content.subject
        except ValueError as exc:  # a header the policy refuses: sending again will not help
            raise DeliveryError(f"The e-mail headers are invalid: {exc}", code="invalid_email_header") from None
        message.set_content(content.text or "This message has an HTML body.")
        if content.html:
            message.add_alternative(content.html, subtype="html")
        try:
            with smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=15) as smtp:
                if s.smtp_starttls:  # with certificate and host name checks, which starttls() skips by default
                    smtp.starttls(context=ssl.create_default_context())
                if s.smtp_user:
                    smtp.login(s.smtp_user, s.smtp_password.get_secret_value())
                smtp.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            raise DeliveryError(f"The mail server refused the recipient ({codes[0] if codes else '?'}).",
                                code="recipient_refused", transient=any(400 <= c < 500 for c in codes)) from None
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(f"The mail server answered {exc.smtp_code}.", code="smtp_error",
                                transient=exc.smtp_code < 500) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryError(f"The mail server is not reachable ({type(exc).__name__}).",
                                code="smtp_unreachable", transient=True) from None


class HttpSmsSender:
    """SMS through a Twilio-compatible API: POST /2010-04-01/Accounts/{sid}/Messages.json with basic auth."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def send(self, to: str, content: Rendered, key: str | None = None) -> None:
        import aiohttp

        s = self.settings
        if not s.sms_base_url or not s.sms_account_sid:
            raise DeliveryError("SMS is not configured (SMS_BASE_URL, SMS_ACCOUNT_SID).", code="sms_not_configured")
        url = f"{s.sms_base_url.rstrip('/')}/2010-04-01/Accounts/{s.sms_account_sid}/Messages.json"
        form = {"To": to, "From": s.sms_from, "Body": content.text}
        auth = aiohttp.BasicAuth(s.sms_account_sid, s.sms_auth_token.get_secret_value())
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
                async with session.post(url, data=form, auth=auth, allow_redirects=False) as response:
                    status = response.status
                    answer = await response.text()
        except Exception as exc:  # noqa: BLE001 - unreachable: retried
            raise DeliveryError(f"The SMS API is not reachable ({type(exc).__name__}).", code="sms_unreachable",
                                transient=True) from None
        if 200 <= status < 300:
            return
        transient = status in (408, 429) or status >= 500
        raise DeliveryError(f"The SMS API answered {status}: {answer[:200]}", code="sms_rejected" if not transient
                            else "sms_unavailable", transient=transient)


class WahaSender:
    def __init__(self, settings: Settings) -> None:
        from ..whatsapp.waha import Waha

        self.settings = settings
        self.waha = Waha(settings.waha_base_url, settings.waha_api_key.get_secret_value())

    async def send(self, to: str, content: Rendered, key: str | None = None) -> None:
        chat_id = to if "@" in to else re.sub(r"[^0-9]", "", to) + "@c.us"
        await self.waha.send_text({"session": self.settings.waha_session, "chatId": chat_id, "text": content.text})


def sender_for(channel: str, settings: Settings) -> Sender:
    if channel == "email" and settings.email_provider == "acs":
        from .acs_email import AcsEmailSender

        return AcsEmailSender(settings)
    return {"email": SmtpSender, "sms": HttpSmsSender, "whatsapp": WahaSender}[channel](settings)
