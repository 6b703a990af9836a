"""E-mails as people send them: forwarded as attachments, multiparts within multiparts, 8-bit charsets, damaged
attachments. What the model is given must hold the offer, and what could not be read must be said."""
from __future__ import annotations

import email
import email.policy
import io
import json
import zipfile
from email.message import EmailMessage
from pathlib import Path

import pytest

from shared.errors import Unprocessable
from shared.files import decode_text
from shared.offers.normalize import add_file, normalize
from shared import files as filetypes

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "offers"
PDF = (FIXTURES / "email_en_pdf_attachment" / "Q-55120.pdf").read_bytes()
FRENCH = (FIXTURES / "email_fr_body" / "offer.eml").read_bytes()


def _mail(body: str = "Please find our quotation attached.") -> EmailMessage:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "sales@example.com", "buyer@example.com", "Quotation"
    message.set_content(body)
    return message


def _read(message: EmailMessage):
    return normalize(None, [("offer.eml", filetypes.EML, message.as_bytes())])


def _pdf_text() -> str:
    return normalize(None, [("q.pdf", filetypes.PDF, PDF)]).text


def test_an_e_mail_forwarded_as_an_attachment_is_read():
    outer = _mail("See the attached offer.")
    outer.add_attachment(email.message_from_bytes(FRENCH, policy=email.policy.default))  # message/rfc822
    french_body = normalize(None, [("offer.eml", filetypes.EML, FRENCH)]).text
    read = _read(outer)
    assert french_body[:200] in read.text and "See the attached offer." in read.text


def test_an_attachment_in_a_multipart_within_the_multipart_is_read():
    inner = EmailMessage()
    inner.set_content("Please find our quotation attached.")
    inner.add_attachment(PDF, maintype="application", subtype="pdf", filename="Q-55120.pdf")
    outer = _mail("Forwarding the supplier's message below.")
    outer.make_mixed()
    outer.attach(inner)
    read = _read(outer)
    assert _pdf_text()[:200] in read.text and "quotation attached" in read.text


@pytest.mark.parametrize("subtype", ["plain", "html"])
def test_text_attachments_are_read_in_the_charset_they_declare(subtype):
    outer = _mail()
    text = "Angebot Müller GmbH: 10 Stück Widget à 5,00 €"
    data = (f"<p>{text}</p>" if subtype == "html" else text).encode("iso-8859-15")
    outer.add_attachment(data, maintype="text", subtype=subtype, filename=f"offer.{'html' if subtype == 'html' else 'txt'}",
                         params={"charset": "iso-8859-15"})
    assert text in _read(outer).text


def test_a_body_in_a_charset_python_does_not_know_is_still_read():
    message = _mail()
    raw = message.as_bytes().replace(b'charset="utf-8"', b'charset="iso-8859-8-i"')
    assert b"iso-8859-8-i" in raw
    read = normalize(None, [("offer.eml", filetypes.EML, raw)])
    assert "quotation attached" in read.text


def _bomb(xml_bytes: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", b"<w:document>" + b"a" * xml_bytes + b"</w:document>")
    return buffer.getvalue()


def test_damaged_attachments_are_skipped_and_named_and_the_rest_is_read():
    outer = _mail("Our prices: 10 chairs at 5 EUR each.")
    outer.add_attachment(PDF[: len(PDF) // 2], maintype="application", subtype="pdf", filename="half.pdf")
    outer.add_attachment(_bomb(filetypes.MAX_DOCX_XML_BYTES + 1), maintype="application",
                         subtype="vnd.openxmlformats-officedocument.wordprocessingml.document", filename="bomb.docx")
    outer.add_attachment(b"\x89PNG\r\n\x1a\nbroken", maintype="image", subtype="png", filename="scan.png")
    read = _read(outer)
    assert "10 chairs at 5 EUR" in read.text and read.images == []
    assert read.skipped == ["The attachment 'half.pdf' could not be read (pdf_corrupt).",
                            "The attachment 'bomb.docx' could not be read (docx_too_large).",
                            "The attachment 'scan.png' could not be read (image_corrupt)."]


def test_a_docx_that_is_a_sound_zip_but_no_word_document_is_docx_corrupt():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", "<w:document><w:body/></w:document>")  # no relationships
    with pytest.raises(Unprocessable) as refused:
        add_file(normalize(None, []), "offer.docx", filetypes.DOCX, buffer.getvalue())
    assert refused.value.code == "docx_corrupt"


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-16"])
def test_utf16_text_is_read_with_or_without_a_bom(encoding):
    assert decode_text("Offer: 10 chairs at 5 EUR, Müller".encode(encoding)) == "Offer: 10 chairs at 5 EUR, Müller"


def test_the_offer_warns_of_each_attachment_that_could_not_be_read():
    from shared.ai.offline import OfflineProvider
    from shared.offers.service import extract_offer, read_input

    outer = _mail("Offer from Schrauben Koch KG: 10 chairs at 5.00 EUR each, total 50.00 EUR.")
    outer.add_attachment(PDF[: len(PDF) // 2], maintype="application", subtype="pdf", filename="half.pdf")
    normalized = read_input(None, [("offer.eml", filetypes.EML, outer.as_bytes())])
    offer = extract_offer(normalized, OfflineProvider(), source="email", received_on="2026-12-07").value
    assert "The attachment 'half.pdf' could not be read (pdf_corrupt)." in offer.warnings


@pytest.mark.parametrize("content_type,data", [
    ("text/plain; charset=windows-1252", "Angebot Müller: 10 Stück à 5,00 €".encode("cp1252")),
    ('text/plain; charset="UTF-16"', "Angebot Müller: 10 Stück à 5,00 €".encode("utf-16")),
    ("text/plain", "Angebot Müller: 10 Stück à 5,00 €".encode("utf-16-le")),
])
def test_a_raw_text_offer_is_read_in_the_charset_it_names_or_shows(content_type, data):
    from shared.offers.ingest import parse_raw

    assert parse_raw(content_type, data, name=None).text == "Angebot Müller: 10 Stück à 5,00 €"


def test_a_raw_text_offer_in_a_charset_that_does_not_fit_is_a_422():
    from shared.offers.ingest import parse_raw

    for content_type in ("text/plain; charset=no-such-charset", "text/plain; charset=utf-8"):
        with pytest.raises(Unprocessable) as refused:
            parse_raw(content_type, b"\xc3\x28 M\xfcller", name=None)
        assert refused.value.code == "text_not_utf8"


def test_a_raw_html_offer_is_accepted_as_a_multipart_one_is():
    from shared.offers.ingest import parse_raw

    [page] = parse_raw("text/html; charset=utf-8", "<p>10 chairs at 5 EUR</p>".encode(), name=None).files
    assert page.content_type == filetypes.HTML and page.name == "offer.html"


def test_a_pdf_sent_as_text_plain_is_read_as_the_pdf_it_is():
    from shared.offers.ingest import parse_raw

    [document] = parse_raw("text/plain", PDF, name=None).files
    assert document.content_type == filetypes.PDF and document.name == "offer.pdf"


@pytest.mark.parametrize("charset", ["undefined", "punycode", "base64", "zlib", "rot13", "unicode_escape", "idna"])
def test_a_charset_that_is_no_text_encoding_is_not_used_to_decode(charset):
    from shared.offers.ingest import parse_raw

    outer = _mail()
    outer.add_attachment("Preis 10 EUR".encode(), maintype="text", subtype="plain", filename="p.txt",
                         params={"charset": charset})
    assert "Preis 10 EUR" in _read(outer).text
    with pytest.raises(Unprocessable) as refused:
        parse_raw(f"text/plain; charset={charset}", b"Preis 10 EUR", name=None)
    assert refused.value.code == "text_not_utf8"


def test_utf16_with_some_characters_whose_low_byte_is_zero_is_still_told_apart():
    text = "Item ─ box, 5 € each 一 \u3000 ok " * 3
    assert decode_text(text.encode("utf-16-le")) == text and decode_text(text.encode("utf-16-be")) == text


def _blank_pdf(pages: int) -> bytes:
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument.new()
    for _ in range(pages):
        document.new_page(200, 200)
    buffer = io.BytesIO()
    document.save(buffer)
    document.close()
    return buffer.getvalue()


def test_files_within_attachments_count_towards_one_bound():
    inner = EmailMessage()
    inner.set_content("Forwarded prices.")
    for n in range(30):
        inner.add_attachment(f"Item {n}: 5 EUR".encode(), maintype="text", subtype="plain", filename=f"p{n}.txt")
    outer = _mail("See below.")
    outer.add_attachment(email.message_from_bytes(inner.as_bytes(), policy=email.policy.default))
    read = _read(outer)
    assert len(read.parts) == 20 and "Item 19: 5 EUR" in read.text and "Item 20: 5 EUR" not in read.text
    assert read.skipped == ["More than 20 files: 'p20.txt' and those after it were not read."]


def test_a_long_blank_pdf_costs_no_rendering_beyond_the_images_kept_nor_pages_beyond_the_bound(monkeypatch):
    from shared.offers import normalize as normalize_module

    rendered = []
    real = normalize_module.filetypes.render_scale
    monkeypatch.setattr(normalize_module.filetypes, "render_scale", lambda *a, **k: rendered.append(1) or real(*a, **k))
    read = normalize(None, [("scan.pdf", filetypes.PDF, _blank_pdf(60))])
    assert len(read.images) == 8 and len(rendered) == 8
    assert read.skipped == ["Only the first 50 pages of 'scan.pdf' were read."]


@pytest.mark.parametrize("text", ["\u0000" * 50, " \t\r\n", "\u0000\u200b\x07 "])
def test_text_of_control_characters_alone_is_an_empty_request(text):
    from shared.errors import BadRequest
    from shared.offers.ingest import parse_json

    with pytest.raises(BadRequest) as refused:
        parse_json(json.dumps({"text": text}).encode())
    assert refused.value.code == "empty_request"
