"""Structured logs: named events with dimensions, secrets and phone numbers masked, App Insights when configured."""
from __future__ import annotations

import json
import logging
import re
from typing import Any, Callable, Iterable

LOGGER_NAME = "intake"
log = logging.getLogger(LOGGER_NAME)

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
# WhatsApp ids and E.164 numbers: keep the country code and the last two digits only. WAHA's message ids carry the
# chat's number after `false_` or `true_`, so an underscore may come before one.
_PHONE = re.compile(r"(?<![A-Za-z0-9.])(\+?\d{2})(\d{5,11})(\d{2})(?=@c\.us|@s\.whatsapp\.net|\b)")
# An international number written in groups: +49 151 12345678, +49-151-1234-5678, +49 (0)151 1234 5678,
# 0049 151 12345678, +49/151/12345678.
_GROUPED_PHONE = re.compile(
    r"(?<![\w.+/])(\+|00)\d{1,3}(?:[ \-/]?\(\d{1,4}\)[ \-/]?\d{1,8}|[ \-/]\d{1,8}){1,6}(?!\w|\.\d|/\d)")


def _mask_grouped(match: re.Match) -> str:
    text = match.group(0)
    digits = [n for n, c in enumerate(text) if c.isdigit()]
    prefix = 2 if match.group(1) == "00" else 0  # the 00 of an international prefix is no digit of the number
    if not 8 <= len(digits) - prefix <= 15:
        return text
    hidden = set(digits[prefix + 2:-2])
    return "".join("*" if n in hidden else c for n, c in enumerate(text))


def mask_phone(text: str) -> str:
    text = _PHONE.sub(lambda m: m.group(1) + "*" * len(m.group(2)) + m.group(3), text)
    return _GROUPED_PHONE.sub(_mask_grouped, text)


class Redactor:
    """Masks known secret values and phone numbers in every log record the process creates."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def clean(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return mask_phone(text)

    def record(self, record: logging.LogRecord) -> logging.LogRecord:
        try:
            record.msg, record.args = self.clean(record.getMessage()), ()
        except Exception:  # noqa: BLE001 - a badly formatted record must still be logged
            record.msg, record.args = self.clean(str(record.msg)), ()
        for key, value in dimensions(record).items():
            if isinstance(value, str):
                setattr(record, key, self.clean(value))
        return record


_installed: dict[str, Any] = {}


def install_redaction(secrets: Iterable[str]) -> Redactor:
    """Wraps the log record factory once, so records from any logger (SDKs included) are masked at creation."""
    redactor = Redactor(secrets)
    _installed["redactor"] = redactor
    if "factory" not in _installed:
        base: Callable[..., logging.LogRecord] = logging.getLogRecordFactory()
        _installed["factory"] = base

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            return _installed["redactor"].record(base(*args, **kwargs))

        logging.setLogRecordFactory(factory)
    return redactor


def _safe(key: str) -> str:
    return key if key not in _STANDARD else f"{key}_"


def log_event(event: str, level: int = logging.INFO, **dims: Any) -> None:
    """One record per event; dimensions become record attributes, which App Insights keeps as custom dimensions."""
    if not log.isEnabledFor(level):  # a busy host logging at WARNING builds no INFO records
        return
    extra = {_safe(k): (v if isinstance(v, (str, int, float, bool)) or v is None else json.dumps(v, default=str))
             for k, v in dims.items()}
    extra["event"] = event
    text = " ".join(f"{k}={v}" for k, v in extra.items() if v is not None and k != "event")
    log.log(level, "%s %s", event, text, extra=extra)


def dimensions(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    """One JSON object per line for local runs and log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        body = {"level": record.levelname, "logger": record.name, "message": record.getMessage(),
                **dimensions(record)}
        return json.dumps(body, default=str)


def configure_logging(level: str, secrets: Iterable[str], app_insights_connection: str = "") -> None:
    """Idempotent: sets the app's log level, masks secrets, and in Azure exports app records to App Insights."""
    log.setLevel(level)
    for noisy in ("httpx", "httpx2", "openai", "azure.core.pipeline.policies.http_logging_policy"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))  # URLs, headers
    install_redaction(secrets)
    if app_insights_connection and "exporter" not in _installed:
        from azure.monitor.opentelemetry import configure_azure_monitor

        configure_azure_monitor(connection_string=app_insights_connection, logger_name=LOGGER_NAME)
        _installed["exporter"] = True
