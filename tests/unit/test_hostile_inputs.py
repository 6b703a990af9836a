"""Inputs that once gave a 500: numbers too long to read, JSON nested too deep, lone surrogates, odd header bytes,
storage keys with control characters, and bodies too large for the task hub."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.automation.events import MAX_CUSTOM_DATA_BYTES, CustomEventIn
from shared.errors import BadRequest, Unprocessable, decode_json
from shared.jobs import job_id_for
from shared.offers.ingest import MAX_FILES, parse_form
from shared.storage.tables import _key

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures"


@pytest.mark.parametrize("body", [b"1" * 5000, b'{"n": ' + b"9" * 5000 + b"}", b"[" * 100_000 + b"]" * 100_000,
                                  b"\xff\xfe{", b"{", b'{"x": NaN}', b"[Infinity]", b"-Infinity", b"1e999",
                                  b'{"x": [1.5, -2e400]}'])
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


def test_a_custom_event_id_holds_no_dot_for_it_is_the_webhook_id():
    assert CustomEventIn(type="custom.x", id="order-17:v2_a").id == "order-17:v2_a"
    with pytest.raises(ValidationError):
        CustomEventIn(type="custom.x", id="order.17")


def test_a_multipart_offer_with_too_many_files_is_a_422():
    uploads = [(f"f{n}.txt", "text/plain", b"1 chair 5 EUR") for n in range(MAX_FILES + 1)]
    with pytest.raises(Unprocessable) as refused:
        parse_form({}, uploads)
    assert refused.value.code == "too_many_files"
    assert len(parse_form({}, uploads[:MAX_FILES]).files) == MAX_FILES


def test_dates_outside_what_storage_compares_count_as_its_bounds():
    from shared.jobs import parse_date

    assert parse_date("0001-01-01", "from").year == 1970
    assert parse_date("9999-12-31", "to", end=True).year == 9000  # one more day used to overflow (500)
    assert parse_date("2026-11-01", "to", end=True).isoformat() == "2026-11-01T23:59:59.999999+00:00"


def test_an_offer_pdf_with_too_many_pages_is_a_422():
    import io

    import pypdfium2 as pdfium

    from shared.offers.ingest import MAX_PDF_PAGES

    document = pdfium.PdfDocument.new()
    for _ in range(MAX_PDF_PAGES + 1):
        document.new_page(595, 842)
    buffer = io.BytesIO()
    document.save(buffer)
    with pytest.raises(Unprocessable) as refused:
        parse_form({}, [("catalogue.pdf", "application/pdf", buffer.getvalue())])
    assert refused.value.code == "too_many_pages"


def test_saving_a_template_computes_none_of_its_constant_expressions():
    import tracemalloc

    from shared.automation.templates import TemplateIn

    tracemalloc.start()
    try:
        TemplateIn(text="{{ 'x'|center(200000000) }}{{ '%999999999d'|format(1) }}{{ '%0300000000d' % 1 }}")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20_000_000  # compiling used to build these strings (about 1.5 GB) in the host


def test_call_metadata_is_bounded(monkeypatch):
    from shared.config import get_settings

    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")  # the functions package loads them
    get_settings.cache_clear()
    from functions.calls import _call_meta

    get_settings.cache_clear()
    assert _call_meta({"title": "Q3 call", "participants": ["Ann", "Bo"]})["participants"] == ["Ann", "Bo"]
    with pytest.raises(Unprocessable) as refused:
        _call_meta({"title": "t" * 3000})
    assert refused.value.code == "invalid_call_metadata"


def test_a_render_waiting_too_long_for_a_free_worker_is_refused_as_busy(monkeypatch):
    from shared.automation import templates
    from shared.errors import ServiceUnavailable

    monkeypatch.setattr(templates, "WORKER_WAIT_SECONDS", 0.2)
    taken = [templates._idle.get() for _ in range(templates.WORKERS)]  # every worker busy elsewhere
    try:
        with pytest.raises(ServiceUnavailable) as busy:
            templates.render_string("Hi {{ name }}", {"name": "Ann"})
        assert busy.value.code == "templates_busy" and busy.value.transient
    finally:
        for worker in taken:
            templates._idle.put(worker)
    assert templates.render_string("Hi {{ name }}", {"name": "Ann"}) == "Hi Ann"


def test_an_empty_json_body_for_a_document_is_a_400():
    from shared.documents.ingest import Limits, parse_json

    with pytest.raises(BadRequest) as refused:
        parse_json(b"", Limits(10, 10_000_000, 50_000_000))
    assert refused.value.code == "invalid_json"


@pytest.mark.parametrize("fields,field", [
    ({"num_pages": "²"}, "num_pages"),  # a digit to str.isdigit, not to int(): once a 500
    ({"num_pages": "-1"}, "num_pages"),  # once ignored, where the JSON body answers 422
    ({"user_id": "u" * 3_000_000}, "user_id"),  # once passed on to the task hub, too large for it: a 500
    ({"fallback_text": "t" * 200_001}, "fallback_text"),
    ({"job_id": "a/b c"}, "job_id"),  # no /api/job-status/{job_id} could find it
    ({"job_id": "j" * 200}, "job_id"),
])
def test_form_fields_of_a_document_are_checked_as_its_json_body_is(fields, field):
    from shared.documents.ingest import Limits, parse_upload

    page = (FIXTURES / "documents" / "rental_agreement_3p" / "page-1.png").read_bytes()
    with pytest.raises(Unprocessable) as refused:
        parse_upload([(page, "image/png", "page-1.png")], fields, Limits(10, 10_000_000, 50_000_000))
    assert [d["field"] for d in refused.value.details] == [field]
    accepted = parse_upload([(page, "image/png", "page-1.png")], {"num_pages": "1", "job_id": "doc-7", "user_id": "",
                                                                 "callback_url": ""}, Limits(10, 10_000_000, 50_000_000))
    assert (accepted.num_pages, accepted.caller_job_id, accepted.user_id) == (1, "doc-7", None)


def test_a_document_json_body_with_a_job_id_no_status_route_could_find_is_a_422():
    from shared.documents.ingest import Limits, parse_json

    with pytest.raises(Unprocessable):
        parse_json(json.dumps({"job_id": "a/b c", "images_base64": ["AAAA"]}).encode(), Limits(10, 10_000_000, 50_000_000))


def _multipart(*files: tuple[str, str]):
    import azure.functions as func

    raw = "".join(f'--b\r\nContent-Disposition: form-data; name="f{n}"; filename="{name}"\r\n'
                  f"Content-Type: text/plain\r\n\r\n{text}\r\n" for n, (name, text) in enumerate(files)) + "--b--\r\n"
    return func.HttpRequest("POST", "http://localhost/api/kb/documents", body=raw.encode(),
                            headers={"content-type": "multipart/form-data; boundary=b"})


def test_a_route_taking_one_file_refuses_more_instead_of_dropping_them(monkeypatch):
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")  # the functions package loads them
    from functions._http import uploaded_file

    assert uploaded_file(_multipart(("rent.txt", "Rent is 900 EUR"))) == ("rent.txt", "text/plain", b"Rent is 900 EUR")
    with pytest.raises(Unprocessable) as refused:
        uploaded_file(_multipart(("a.txt", "one"), ("b.txt", "two")))
    assert refused.value.code == "too_many_files" and "holds 2" in refused.value.message


def test_a_multipart_file_name_longer_than_a_file_system_takes_is_a_422(monkeypatch):
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    from functions._http import uploaded_files

    assert uploaded_files(_multipart(("n" * 255, "x")))[0][0] == "n" * 255
    with pytest.raises(Unprocessable) as refused:  # once a 500: the job's input grew too large for the task hub
        uploaded_files(_multipart(("n" * 256, "x")))
    assert refused.value.code == "invalid_file_name"


def test_a_row_too_large_for_table_storage_is_a_413_before_any_request():
    from shared.errors import PayloadTooLarge
    from shared.storage.tables import Tables

    fits = Tables._entity("p", "r", {"text": "x" * 470_000})
    assert "".join(fits[f"data{n or ''}"] for n in range(16)) == json.dumps({"text": "x" * 470_000},
                                                                           separators=(",", ":"))
    with pytest.raises(PayloadTooLarge) as refused:  # Azurite took such rows up to 1 MiB of UTF-8; Azure would not
        Tables._entity("p", "r", {"text": "x" * 500_000})
    assert refused.value.status == 413 and refused.value.code == "too_large_to_store"


def test_an_integer_too_large_for_a_float_is_no_json_number():
    from shared.errors import BadRequest, decode_json

    assert decode_json(b'{"n": ' + str(10 ** 300).encode() + b"}")["n"] == 10 ** 300
    with pytest.raises(BadRequest):
        decode_json(b'{"n": 1' + b"0" * 400 + b"}")
