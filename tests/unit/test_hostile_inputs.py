"""Inputs that once gave a 500: numbers too long to read, JSON nested too deep, lone surrogates, odd header bytes,
storage keys with control characters, and bodies too large for the task hub."""
from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from shared.automation.events import MAX_CUSTOM_DATA_BYTES, CustomEventIn
from shared.errors import BadRequest, Unprocessable, decode_json
from shared.jobs import job_id_for
from shared.offers.ingest import MAX_FILES, parse_form
from shared.storage.tables import _key


@pytest.mark.parametrize("body", [b"1" * 5000, b'{"n": ' + b"9" * 5000 + b"}", b"[" * 100_000 + b"]" * 100_000,
                                  b"\xff\xfe{", b"{"])
def test_json_that_cannot_be_read_is_a_400(body):
    with pytest.raises(BadRequest) as refused:
        decode_json(body)
    assert refused.value.code == "invalid_json"


def test_lone_surrogates_become_replacement_characters_and_pairs_stay_characters():
    value = decode_json(b'{"\\udfff": ["a\\ud800b", "\\ud83d\\ude00"], "n": 1}')
    assert value == {"\ufffd": ["a\ufffdb", "\U0001F600"], "n": 1}


def test_a_json_answer_holding_a_lone_surrogate_is_still_sent(monkeypatch):
    from shared.config import get_settings

    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")  # the functions package loads them
    get_settings.cache_clear()
    from functions._http import json_response

    response = json_response({"text": "a\ud800b"})
    get_settings.cache_clear()
    assert response.status_code == 200 and json.loads(response.get_body()) == {"text": "a?b"}


def test_an_idempotency_key_with_undecodable_header_bytes_still_names_one_job():
    assert job_id_for("offer", "\udce9") == job_id_for("offer", "\udce9") != job_id_for("offer", "e")


def test_table_keys_escape_every_control_character():
    assert _key("a/b\x7f\x85#\x01é") == "a%2Fb%7F%85%23%01é"


def test_custom_event_data_is_bounded():
    CustomEventIn(type="custom.fine", data={"x": "y" * 1000})
    with pytest.raises(ValidationError, match="at most"):
        CustomEventIn(type="custom.big", data={"x": "y" * MAX_CUSTOM_DATA_BYTES})


def test_a_multipart_offer_with_too_many_files_is_a_422():
    uploads = [(f"f{n}.txt", "text/plain", b"1 chair 5 EUR") for n in range(MAX_FILES + 1)]
    with pytest.raises(Unprocessable) as refused:
        parse_form({}, uploads)
    assert refused.value.code == "too_many_files"
    assert len(parse_form({}, uploads[:MAX_FILES]).files) == MAX_FILES
