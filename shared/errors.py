"""The one exception tree of the app, and the error JSON every endpoint answers with."""
from __future__ import annotations

import math
import re
import sys
from typing import Any


class SettingsError(Exception):
    """A setting is missing or malformed; the message names the variable."""


class AppError(Exception):
    """An error a caller can act on; `status` is its HTTP code, `code` a stable snake_case name.

    `transient` marks failures of something we call (a model, a receiver) that are worth retrying later;
    `usage` holds the model calls paid for before the failure, so that a job's cost still counts them.
    """

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, details: list[Any] | None = None,
                 transient: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.code
        self.details = details or []
        self.transient = transient
        self.retry_after = retry_after
        self.usage: list[Any] = []

    def to_body(self) -> dict:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            error["details"] = self.details
        return {"error": error}


class BadRequest(AppError):
    status, code = 400, "bad_request"


class Unauthorized(AppError):
    status, code = 401, "unauthorized"


class NotFound(AppError):
    status, code = 404, "not_found"


class Conflict(AppError):
    status, code = 409, "conflict"


class PayloadTooLarge(AppError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(AppError):
    status, code = 415, "unsupported_media_type"


class Unprocessable(AppError):
    status, code = 422, "unprocessable"


class TooManyRequests(AppError):
    status, code = 429, "too_many_requests"


class AIError(AppError):
    """A model call failed. Transient ones (429, 5xx, timeouts, unusable output) are worth retrying."""

    status, code = 502, "ai_error"


class DeliveryError(AppError):
    """An outbound delivery (callback, webhook, notification) failed."""

    status, code = 502, "delivery_failed"


class ServiceUnavailable(AppError):
    """An outage of something we depend on, not the caller's fault."""

    status, code = 503, "service_unavailable"


def invalid_body(exc: Any, what: str = "The request body", code: str = "invalid_request") -> Unprocessable:
    """A pydantic ValidationError as a 422 whose details give the path of each error (`conditions.all.0.op`)."""
    return schema_error([{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()],
                        what, code)


def schema_error(details: list[dict], what: str = "The request body", code: str = "invalid_request") -> Unprocessable:
    """A 422 whose details (`{"field": path, "message": ...}`) say where the body breaks the schema."""
    return Unprocessable(f"{what} does not match the schema.", code=code, details=details)


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def decode_json(body: bytes | str, what: str = "The body", code: str = "invalid_json") -> Any:
    """Any JSON value (an empty body is null); 400 when it is not JSON or nests too deep. A lone UTF-16 surrogate
    (`"\\ud800"`, valid JSON but no character) becomes U+FFFD, so that nothing stored can break the JSON answers that
    read it back. NaN, Infinity and numbers beyond a float's range (`1e999`, `10**400` written out) are not JSON
    either: Python's reader takes them, and what compares or answers with them fails."""
    import json

    try:
        text = (body.decode("utf-8-sig") if isinstance(body, bytes) else body) or "null"
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float, parse_int=_float_sized_int)
        return _without_lone_surrogates(value) if _SURROGATE_ESCAPE.search(text) else value
    except (ValueError, RecursionError):  # ValueError: not UTF-8, not JSON, or an integer too long to read
        raise BadRequest(f"{what} is not valid JSON (or nests too deep).", code=code) from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is too large for a number")
    return value


def _float_sized_int(text: str) -> int:
    value = int(text)
    if abs(value) > sys.float_info.max:  # 10**400: what reads it as a number (a rule's comparison, JavaScript) fails
        raise ValueError(f"{text[:20]}... is too large for a number")
    return value


def _without_lone_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_without_lone_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_without_lone_surrogates(k): _without_lone_surrogates(v) for k, v in value.items()}
    return value


def parse_json_body(body: bytes | str, model: Any, what: str = "The body", code: str = "invalid_request") -> Any:
    """The body as an instance of the pydantic `model`: 400 when it is not a JSON object, 422 when it does not fit."""
    from pydantic import ValidationError

    raw = decode_json(body, what)
    if not isinstance(raw, dict):
        raise BadRequest(f"{what} must be a JSON object.", code="invalid_json")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise invalid_body(exc, what, code) from None
