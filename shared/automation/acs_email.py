"""E-mail through Azure Communication Services: access key or managed identity, sent once per notification."""
from __future__ import annotations

import asyncio
import uuid
from typing import Any

from ..config import Settings
from ..errors import DeliveryError
from ..identity import app_credential
from .templates import Rendered

_NAMESPACE = uuid.UUID("5b0c4e1e-6f7a-4e0b-9d57-0a6f2f1c9a11")
POLL_SECONDS = 1.0
POLL_TIMEOUT_SECONDS = 120.0  # then the orchestration asks again later, under the same Operation-Id


def operation_id(key: str) -> str:
    """ACS runs a send once per Operation-Id: the notification's own id makes a resend after a crash a no-op."""
    return str(uuid.uuid5(_NAMESPACE, key))


def message_of(sender: str, to: str, content: Rendered) -> dict[str, Any]:
    body: dict[str, Any] = {"subject": content.subject, "plainText": content.text or "This message has an HTML body."}
    if content.html:
        body["html"] = content.html
    return {"senderAddress": sender, "recipients": {"to": [{"address": to}]}, "content": body}


class AcsEmailSender:
    """A 400 about the message or recipient is final; throttling, outages and unfinished operations are retried."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def _client(self) -> Any:
        from azure.communication.email.aio import EmailClient

        s = self.settings
        options = {"polling_interval": POLL_SECONDS, "retry_total": 1}  # the orchestration owns retrying
        if s.acs_email_connection_string.get_secret_value():
            from azure.core.credentials import AzureKeyCredential

            # parsed here: the SDK's own parser drops the endpoint's scheme and assumes https
            parts = dict(p.partition("=")[::2] for p in s.acs_email_connection_string.get_secret_value().split(";")
                         if "=" in p)
            parts = {k.lower(): v for k, v in parts.items()}
            if not parts.get("endpoint") or not parts.get("accesskey"):
                raise DeliveryError("ACS_EMAIL_CONNECTION_STRING must be endpoint=...;accesskey=...",
                                    code="email_not_configured")
            return EmailClient(parts["endpoint"], AzureKeyCredential(parts["accesskey"]), **options)
        return EmailClient(s.acs_email_endpoint, app_credential(s.azure_client_id), **options)

    async def send(self, to: str, content: Rendered, key: str | None = None) -> None:
        from azure.core.exceptions import HttpResponseError, ServiceRequestError

        s = self.settings
        if not s.email_from or not (s.acs_email_endpoint or s.acs_email_connection_string.get_secret_value()):
            raise DeliveryError("E-mail is not configured (ACS_EMAIL_ENDPOINT, EMAIL_FROM).",
                                code="email_not_configured")
        try:
            async with self._client() as client:
                try:
                    poller = await client.begin_send(message_of(s.email_from, to, content),
                                                     operation_id=operation_id(key) if key else None)
                except HttpResponseError as exc:
                    if exc.status_code == 409 and key:  # this Operation-Id ran before: the e-mail went out then
                        return
                    raise
                try:
                    await asyncio.wait_for(poller.result(), POLL_TIMEOUT_SECONDS)
                except asyncio.TimeoutError:
                    raise DeliveryError("Azure Communication Services has not finished sending yet.",
                                        code="email_pending", transient=True) from None
                except HttpResponseError as exc:
                    if exc.status_code in (None, 200):  # the operation itself ended Failed: the message is refused
                        raise DeliveryError(f"Azure Communication Services did not send it: {_reason(exc)}"[:300],
                                            code="email_failed") from None
                    raise
        except ServiceRequestError as exc:
            raise DeliveryError(f"Azure Communication Services is not reachable ({type(exc).__name__}).",
                                code="email_unreachable", transient=True) from None
        except HttpResponseError as exc:
            status = exc.status_code or 0
            transient = status in (408, 429) or status >= 500 or status == 0
            raise DeliveryError(f"Azure Communication Services answered {status}: {_reason(exc)}"[:300],
                                code="email_unavailable" if transient else "email_rejected",
                                transient=transient) from None


def _reason(exc: Any) -> str:
    """The service's own code and message (azure-core's text repeats them on extra lines)."""
    error = getattr(exc, "error", None)
    if error is not None and getattr(error, "message", None):
        return f"{error.message} ({error.code})" if getattr(error, "code", None) else error.message
    return " ".join(str(exc.message or exc).split())
