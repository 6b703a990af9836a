"""Authenticity of WAHA webhooks: HMAC-SHA512 of the raw request body, as WAHA signs it."""
from __future__ import annotations

import hashlib
import hmac
from typing import Mapping

from ..errors import Unauthorized

SIGNATURE_HEADER = "x-webhook-hmac"
ALGORITHM_HEADER = "x-webhook-hmac-algorithm"
ALGORITHM = "sha512"


def sign(raw_body: bytes, key: str) -> str:
    """The value WAHA puts in `X-Webhook-Hmac`: lowercase hex HMAC-SHA512 keyed with the UTF-8 key."""
    return hmac.new(key.encode("utf-8"), raw_body, hashlib.sha512).hexdigest()


def _header(headers: Mapping[str, str], name: str) -> str | None:
    # HTTP header names are case-insensitive, and plain dicts (tests, other hosts) are not.
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def verify_hmac(raw_body: bytes, headers: Mapping[str, str], key: str) -> None:
    """Raise `Unauthorized` unless `X-Webhook-Hmac` signs exactly these bytes with `key`.

    `raw_body` must be the bytes as received: any re-serialisation of the JSON changes the digest.
    """
    if not key:
        # Fail closed: an unset key must not turn into "accept everything".
        raise Unauthorized("The WAHA webhook HMAC key is not configured.", code="waha_hmac_not_configured")
    given = _header(headers, SIGNATURE_HEADER)
    if not given or not given.strip():
        raise Unauthorized("The X-Webhook-Hmac header is missing.", code="waha_signature_missing")
    algorithm = _header(headers, ALGORITHM_HEADER)
    if algorithm is not None and algorithm.strip().lower() != ALGORITHM:
        raise Unauthorized("X-Webhook-Hmac-Algorithm must be sha512.", code="waha_signature_algorithm")
    expected = sign(raw_body, key).encode("ascii")
    # Bytes on both sides: compare_digest refuses non-ASCII str, and a forged header may carry any.
    if not hmac.compare_digest(expected, given.strip().lower().encode("utf-8", "replace")):
        raise Unauthorized("The X-Webhook-Hmac signature does not match the body.", code="waha_signature_invalid")
