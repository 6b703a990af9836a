"""WAHA webhook HMAC: the published and our own vectors verify, anything altered is refused."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.errors import Unauthorized
from shared.whatsapp.signature import sign, verify_hmac

VECTORS = json.loads((Path(__file__).resolve().parents[3].parent / "shared" / "fixtures" / "waha"
                      / "hmac-vectors.json").read_text())["vectors"]
POSITIVE = [v for v in VECTORS if "expected_hmac" in v]
NEGATIVE = [v for v in VECTORS if "expected_hmac_must_not_equal" in v]


def _headers(signature: str, algorithm: str | None = "sha512") -> dict[str, str]:
    headers = {"X-Webhook-Hmac": signature}
    if algorithm is not None:
        headers["X-Webhook-Hmac-Algorithm"] = algorithm
    return headers


def test_vector_file_has_positive_and_negative_cases():
    assert len(POSITIVE) >= 2 and len(NEGATIVE) >= 1


@pytest.mark.parametrize("vector", POSITIVE, ids=lambda v: v["source"])
def test_every_published_vector_verifies(vector):
    body = vector["raw_body"].encode()
    assert sign(body, vector["key"]) == vector["expected_hmac"]
    verify_hmac(body, _headers(vector["expected_hmac"], vector["algorithm"]), vector["key"])


@pytest.mark.parametrize("vector", NEGATIVE, ids=lambda v: v["source"])
def test_reserialised_body_does_not_verify_against_the_original_signature(vector):
    with pytest.raises(Unauthorized) as err:
        verify_hmac(vector["raw_body"].encode(), _headers(vector["expected_hmac_must_not_equal"]), vector["key"])
    assert err.value.code == "waha_signature_invalid"


def test_tampered_body_is_refused():
    vector = POSITIVE[1]
    tampered = vector["raw_body"].replace('"hi"', '"ho"').encode()
    with pytest.raises(Unauthorized) as err:
        verify_hmac(tampered, _headers(vector["expected_hmac"]), vector["key"])
    assert err.value.code == "waha_signature_invalid"


def test_wrong_key_is_refused():
    vector = POSITIVE[0]
    with pytest.raises(Unauthorized) as err:
        verify_hmac(vector["raw_body"].encode(), _headers(vector["expected_hmac"]), "not-the-key")
    assert err.value.code == "waha_signature_invalid"


@pytest.mark.parametrize("algorithm", ["sha256", "sha1", "md5", ""])
def test_algorithm_other_than_sha512_is_refused_even_with_a_valid_digest(algorithm):
    vector = POSITIVE[0]
    with pytest.raises(Unauthorized) as err:
        verify_hmac(vector["raw_body"].encode(), _headers(vector["expected_hmac"], algorithm), vector["key"])
    assert err.value.code == "waha_signature_algorithm"


def test_missing_algorithm_header_is_accepted_when_the_digest_matches():
    vector = POSITIVE[0]
    verify_hmac(vector["raw_body"].encode(), _headers(vector["expected_hmac"], None), vector["key"])


def test_header_names_match_in_any_case_and_uppercase_hex_is_accepted():
    vector = POSITIVE[0]
    verify_hmac(vector["raw_body"].encode(),
                {"x-webhook-hmac": vector["expected_hmac"].upper(), "X-WEBHOOK-HMAC-ALGORITHM": "SHA512"},
                vector["key"])


@pytest.mark.parametrize("headers", [{}, {"X-Webhook-Hmac": ""}, {"X-Webhook-Hmac": "  "}],
                         ids=["absent", "empty", "blank"])
def test_missing_signature_is_refused(headers):
    with pytest.raises(Unauthorized) as err:
        verify_hmac(b"{}", headers, "k")
    assert err.value.code == "waha_signature_missing"


def test_unconfigured_key_refuses_even_a_signature_made_with_the_empty_key():
    body = b'{"event":"message"}'
    with pytest.raises(Unauthorized) as err:
        verify_hmac(body, _headers(sign(body, "")), "")
    assert err.value.code == "waha_hmac_not_configured"


def test_non_ascii_signature_is_refused_not_crashing():
    with pytest.raises(Unauthorized) as err:
        verify_hmac(b"{}", _headers("ü" * 128), "k")
    assert err.value.code == "waha_signature_invalid"


def test_errors_are_401_and_carry_no_key_or_digest():
    vector = POSITIVE[0]
    with pytest.raises(Unauthorized) as err:
        verify_hmac(vector["raw_body"].encode(), _headers("0" * 128), vector["key"])
    body = json.dumps(err.value.to_body())
    assert err.value.status == 401
    assert vector["key"] not in body and vector["expected_hmac"] not in body


def test_a_signature_header_with_bytes_that_are_not_text_is_refused_not_a_crash():
    body = b'{"event": "message"}'
    forged = "\udce9" * 10  # how the host hands over a header byte 0xE9 it could not decode
    with pytest.raises(Unauthorized):
        verify_hmac(body, {"X-Webhook-Hmac": forged}, "key")
