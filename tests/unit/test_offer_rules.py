"""Offline offer extraction: every fixture's text gives the fields its expected.json names, and rules stay general."""
from __future__ import annotations

import datetime
import email
import email.policy
import email.utils
import json
import re
from pathlib import Path

import pytest

from shared.offers.language import detect_language
from shared.offers.rules import extract_offer_offline

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "offers"
# The fixture notes give the day the chat messages were sent; relative dates count from it.
WHATSAPP_SENT = datetime.date(2026, 11, 23)
NOT_COMPARED = {"case", "note", "source", "expect_warning_on"}


def _email(path: Path) -> dict:
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    body = message.get_body(preferencelist=("plain", "html"))
    text = body.get_content()
    if body.get_content_type() == "text/html":
        text = re.sub(r"<[^>]+>", " ", text)
    return {"text": text, "subject": message["Subject"], "sender": message["From"],
            "sent_at": email.utils.parsedate_to_datetime(message["Date"]).date(), "source": "email"}


def _pdf_text(path: Path) -> str:
    pdfium = pytest.importorskip("pypdfium2")
    return "\n".join(page.get_textpage().get_text_range() for page in pdfium.PdfDocument(str(path)))


def _docx_text(path: Path) -> str:
    docx = pytest.importorskip("docx")
    document = docx.Document(str(path))
    rows = [" | ".join(cell.text for cell in row.cells) for table in document.tables for row in table.rows]
    return "\n".join([p.text for p in document.paragraphs] + rows)


def _whatsapp(case: str) -> dict:
    return {"text": (FIXTURES / case / "message.txt").read_text(encoding="utf-8"), "source": "whatsapp",
            "sent_at": WHATSAPP_SENT}


def _email_with_pdf() -> dict:
    inputs = _email(FIXTURES / "email_en_pdf_attachment" / "offer.eml")
    inputs["text"] += "\n\n" + _pdf_text(FIXTURES / "email_en_pdf_attachment" / "Q-55120.pdf")
    return inputs


INPUTS = {
    "whatsapp_de_text": lambda: _whatsapp("whatsapp_de_text"),
    "whatsapp_en_terse": lambda: _whatsapp("whatsapp_en_terse"),
    "email_fr_body": lambda: _email(FIXTURES / "email_fr_body" / "offer.eml"),
    "email_en_pdf_attachment": _email_with_pdf,
    "docx_it_table": lambda: {"text": _docx_text(FIXTURES / "docx_it_table" / "offer.docx"),
                              "source": "document", "sent_at": None},
    "email_not_an_offer": lambda: _email(FIXTURES / "email_not_an_offer" / "mail.eml"),
}
NEEDS_OCR = {"scan_es_image"}


def _expected(case: str) -> dict:
    return json.loads((FIXTURES / case / "expected.json").read_text(encoding="utf-8"))


def _extract(case: str):
    return extract_offer_offline(**INPUTS[case]())


def _assert_matches(offer, expected: dict) -> None:
    got = offer.model_dump()
    for name, value in expected.items():
        if name in NOT_COMPARED:
            continue
        if name == "contact":
            for key, part in value.items():
                assert got["contact"] and got["contact"][key] == part, f"contact.{key}: {got['contact']}"
        elif name == "items":
            assert len(got["items"]) == len(value), got["items"]
            for index, (item, wanted) in enumerate(zip(got["items"], value)):
                for key, part in wanted.items():
                    assert item[key] == part, f"items[{index}].{key}: got {item[key]!r}, expected {part!r}"
        else:
            assert got[name] == value, f"{name}: got {got[name]!r}, expected {value!r}"


ALL_CASES = sorted(p.name for p in FIXTURES.iterdir() if (p / "expected.json").exists())


def test_every_fixture_case_has_an_input_builder_or_a_reason_to_skip():
    assert set(ALL_CASES) == set(INPUTS) | NEEDS_OCR


@pytest.mark.parametrize("case", ALL_CASES)
def test_extraction_gives_every_field_the_fixture_expects(case):
    if case in NEEDS_OCR:
        pytest.skip("the input is an image without a text layer; these tests cannot produce its OCR text")
    offer = _extract(case)
    expected = _expected(case)
    assert offer.is_offer is expected.get("is_offer", True)
    _assert_matches(offer, expected)


@pytest.mark.parametrize("case", sorted(INPUTS))
def test_extraction_reports_exactly_the_disagreements_the_fixture_expects(case):
    offer = _extract(case)
    flagged = {w.split(":", 1)[0] for w in offer.warnings}
    assert flagged == set(_expected(case).get("expect_warning_on", []))


@pytest.mark.parametrize("case,supplier,currency,total_net", [
    ("whatsapp_de_text", "Schrauben Koch KG", "EUR", 223.90),
    ("whatsapp_en_terse", "Paperline Supply", "USD", 2520.00),
    ("email_fr_body", "Emballages Mercier SARL", "EUR", 6110.00),
    ("email_en_pdf_attachment", "Northwind Components Ltd", "GBP", 6287.10),
    ("docx_it_table", "Luce Verde S.r.l.", "EUR", 2430.00),
])
def test_supplier_currency_and_stated_net_total_are_exact(case, supplier, currency, total_net):
    offer = _extract(case)
    assert (offer.supplier, offer.currency, offer.total_net) == (supplier, currency, total_net)


def test_stated_net_total_is_kept_when_items_add_up_to_less():
    offer = _extract("whatsapp_de_text")
    assert offer.total_net == 223.90
    assert any(w.startswith("total_net:") and "223.90" in w and "222.90" in w for w in offer.warnings)


def test_message_without_prices_is_not_an_offer_and_has_no_commercial_fields():
    offer = _extract("email_not_an_offer")
    assert offer.is_offer is False and offer.items == []
    assert (offer.total_net, offer.total_gross, offer.currency, offer.valid_until) == (None, None, None, None)


def test_pdf_alone_gives_the_offer_of_the_email_that_carries_it():
    pdf_only = extract_offer_offline(_pdf_text(FIXTURES / "email_en_pdf_attachment" / "Q-55120.pdf"),
                                     source="document", sent_at=None)
    expected = _expected("email_en_pdf_attachment")
    _assert_matches(pdf_only, expected)
    assert [i.line_total for i in pdf_only.items] == [5130.00, 744.00, 744.00]


def test_pack_quantity_is_derived_when_the_price_is_per_inner_unit():
    offer = _extract("whatsapp_en_terse")
    item = offer.items[0]
    assert (item.quantity, item.unit, item.unit_price, item.description) == (80, "box", 31.50, "A4 copy paper 80gsm")
    assert offer.delivery_included is True


def test_pack_quantity_stays_in_packs_when_the_price_unit_is_not_stated():
    offer = extract_offer_offline("- 20 confezioni di guanti nitrile (100 pz/confezione) a 6,90 € cad.\n"
                                  "Totale imponibile 138,00 €", source="text", sent_at=None)
    item = offer.items[0]
    assert (item.quantity, item.unit, item.unit_price) == (20, "pack", 6.90)
    assert offer.warnings == []


def test_year_of_a_day_and_month_comes_from_the_send_date():
    text = "Angebot: 10 Stk Kabel à 2,00 €\nGültig bis 05.01. Lieferung sofort."
    late = extract_offer_offline(text, source="whatsapp", sent_at=datetime.date(2026, 12, 28))
    assert late.valid_until == "2027-01-05"
    assert extract_offer_offline(text, source="whatsapp", sent_at=None).valid_until is None


@pytest.mark.parametrize("validity,sent_at,expected", [
    ("Offre valable 30 jours.", datetime.date(2026, 11, 18), "2026-12-18"),
    ("Validità offerta: 60 giorni dalla data (20/11/2026).", None, "2027-01-19"),
    ("Validez de la oferta: 15 días desde 12/11/2026.", None, "2026-11-27"),
    ("Price holds till end of month.", datetime.date(2026, 2, 10), "2026-02-28"),
    ("Valid until: 17 January 2027", None, "2027-01-17"),
    ("Quote valid for 2 weeks.", datetime.date(2026, 11, 2), "2026-11-16"),
])
def test_validity_is_read_from_absolute_and_relative_dates(validity, sent_at, expected):
    offer = extract_offer_offline(f"10 pcs Widget @ 2.00 EUR\n{validity}", source="text", sent_at=sent_at)
    assert offer.valid_until == expected


@pytest.mark.parametrize("line,unit_price,line_total", [
    ("Widget 1,000 pcs USD 1,234.56 USD 1,234,560.00", 1234.56, 1234560.00),
    ("Widget 1.000 Stk 1.234,56 € 1.234.560,00 €", 1234.56, 1234560.00),
    ("Widget 1000 pcs 1 234,56 € 1 234 560,00 €", 1234.56, 1234560.00),
    ("Widget 1000 pcs 1\u00a0234,56\u00a0€ 1\u00a0234\u00a0560,00\u00a0€", 1234.56, 1234560.00),
    ("Widget 1000 pcs CHF 1'234.56 CHF 1'234'560.00", 1234.56, 1234560.00),
])
def test_number_formats_of_the_five_languages_read_the_same(line, unit_price, line_total):
    offer = extract_offer_offline(line, source="document", sent_at=None)
    item = offer.items[0]
    assert (item.quantity, item.unit_price, item.line_total) == (1000, unit_price, line_total)


def test_ocr_style_rows_with_dot_leaders_and_multiplication_are_items():
    text = ("Ferretería Ibérica S.L. - Calle Mayor 8, 28013 Madrid\n"
            "Taladro percutor TP-800 ....... 6 uds x 89,00 = 534,00\n"
            "Juego de brocas HSS 19 pzs .... 6udsx 17,50 =105,00\n"
            "Base imponible: 639,00\nIVA 21%: 134,19\nTOTAL: 773,19")
    offer = extract_offer_offline(text, source="document", sent_at=None)
    assert [(i.description, i.quantity, i.unit, i.unit_price, i.line_total) for i in offer.items] == [
        ("Taladro percutor TP-800", 6, "pcs", 89.00, 534.00),
        ("Juego de brocas HSS 19 pzs", 6, "pcs", 17.50, 105.00)]
    assert (offer.supplier, offer.total_net, offer.vat_rate, offer.vat, offer.total_gross) == (
        "Ferretería Ibérica S.L.", 639.00, 0.21, 134.19, 773.19)
    assert offer.warnings == []


def test_unqualified_total_after_vat_is_the_gross_and_subtotal_without_discount_is_the_net():
    text = ("Widget A - 250 units @ $4.20 each\nFreight to Chicago: $180.00\n"
            "Subtotal: $1,230.00\nSales tax 8%: $98.40\nTotal: $1,328.40")
    offer = extract_offer_offline(text, source="email", sent_at=None)
    assert (offer.total_net, offer.vat_rate, offer.vat, offer.total_gross) == (1230.00, 0.08, 98.40, 1328.40)
    assert [i.description for i in offer.items] == ["Widget A", "Freight"]


def test_table_columns_are_found_by_their_headings_and_a_totals_row_is_not_an_item():
    text = ("Please see our offer OF-7781 below.\n"
            "| Code | Description | Qty | Unit | Unit price | Total\n"
            "| CB-10 | Cardboard box 40x30x20 | 1,000 | pcs | €0.82 | €820.00\n"
            "| TP-50 | Packing tape 50 mm | 36 | rolls | €2.15 | €77.40\n"
            "| | Total net | | | | €897.40\n"
            "VAT 21% not included. Offer valid until 15/12/2026. Delivery within 5 working days.")
    offer = extract_offer_offline(text, source="email", sent_at=datetime.date(2026, 11, 20))
    assert [(i.sku, i.description, i.quantity, i.unit, i.unit_price, i.line_total) for i in offer.items] == [
        ("CB-10", "Cardboard box 40x30x20", 1000, "pcs", 0.82, 820.00),
        ("TP-50", "Packing tape 50 mm", 36, "roll", 2.15, 77.40)]
    assert (offer.offer_number, offer.currency, offer.total_net, offer.vat_rate, offer.vat) == (
        "OF-7781", "EUR", 897.40, 0.21, None)
    assert (offer.valid_until, offer.delivery_time) == ("2026-12-15", "5 working days")


def test_quoted_earlier_message_lends_neither_supplier_nor_contact_nor_items():
    text = ("Hello Anna,\nour price: 300 pcs cartons 60x40 @ EUR 1.10, delivered.\n"
            "Kind regards,\nPiet de Vries\nVerpakkingen Holland B.V.\n\n"
            "On Mon, 16 Nov 2026 at 10:12, Anna Becker <a.becker@kunde.example> wrote:\n"
            "> We need 500 pcs cartons 60x40 @ EUR 1.00.\n> Best regards,\n> Anna Becker\n> Müller Logistik AG\n")
    offer = extract_offer_offline(text, source="email", sent_at=datetime.date(2026, 11, 20))
    assert (offer.supplier, offer.contact.name, offer.contact.email) == (
        "Verpakkingen Holland B.V.", "Piet de Vries", None)
    assert [(i.quantity, i.unit_price) for i in offer.items] == [(300, 1.10)]


def test_customer_company_is_not_taken_for_the_supplier():
    text = "Customer: Contoso Robotics GmbH\nItem 10 pcs GBP 2.00 GBP 20.00\nNet total: GBP 20.00"
    assert extract_offer_offline(text, source="document", sent_at=None).supplier is None


def test_chat_without_prices_is_not_an_offer():
    offer = extract_offer_offline("Can we move our call to Tuesday 24.11. at 3pm? I'll send the minutes "
                                  "of the 2 meetings afterwards.\nThanks,\nMark", source="whatsapp",
                                  sent_at=datetime.date(2026, 11, 20))
    assert offer.is_offer is False and offer.items == [] and offer.total_net is None


@pytest.mark.parametrize("text,language", [
    ("Hallo Herr Yilmaz, wie besprochen unser Angebot, Lieferung 2-3 Werktage.", "de"),
    ("Bonjour Madame, nous avons le plaisir de vous proposer notre offre.", "fr"),
    ("Please find attached our quotation as discussed. Kind regards", "en"),
    ("Validità offerta: 60 giorni dalla data. Consegna franco destino entro 10 giorni.", "it"),
    ("Estimado cliente, le enviamos nuestro presupuesto con la validez de la oferta.", "es"),
])
def test_language_is_detected_from_common_words(text, language):
    assert detect_language(text) == language


@pytest.mark.parametrize("text", ["", "ok 👍", "12 x 4 = 48", "Q-55120"])
def test_language_is_none_when_the_text_says_too_little(text):
    assert detect_language(text) is None
