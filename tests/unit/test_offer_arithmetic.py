"""Offer arithmetic: disagreements between stated amounts become warnings; stated amounts never change."""
from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from shared.offers.arithmetic import check_offer
from shared.offers.models import Offer, OfferItem
from shared.offers.rules import extract_offer_offline

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "offers"


def _offer(**fields) -> Offer:
    return Offer(is_offer=True, **fields)


def _item(quantity=None, unit_price=None, line_total=None, description="Widget") -> OfferItem:
    return OfferItem(description=description, quantity=quantity, unit_price=unit_price, line_total=line_total)


def _fields(warnings: list[str]) -> list[str]:
    return [w.split(":", 1)[0] for w in warnings]


def test_whatsapp_total_one_euro_above_the_items_is_flagged_on_total_net():
    text = (FIXTURES / "whatsapp_de_text" / "message.txt").read_text(encoding="utf-8")
    extracted = extract_offer_offline(text, source="whatsapp", sent_at=datetime.date(2026, 11, 23))
    checked = check_offer(extracted.model_copy(update={"warnings": []}))
    assert _fields(checked.warnings) == ["total_net"]
    assert "223.90" in checked.warnings[0] and "222.90" in checked.warnings[0]
    assert checked.total_net == 223.90


def test_consistent_offer_with_discount_vat_and_gross_has_no_warnings():
    offer = _offer(items=[_item(120, 42.75, 5130.00), _item(120, 6.20, 744.00), _item(240, 3.10, 744.00)],
                   discount_rate=0.05, total_net=6287.10, vat_rate=0.20, vat=1257.42, total_gross=7544.52)
    assert check_offer(offer).warnings == []


def test_consistent_offer_with_a_flat_shipping_line_has_no_warnings():
    offer = _offer(items=[_item(400, 11.90), _item(60, 18.50), _item(1, 240.00, description="Livraison")],
                   total_net=6110.00, vat_rate=0.20, vat=1222.00, total_gross=7332.00)
    assert check_offer(offer).warnings == []


def test_line_total_that_is_not_quantity_times_price_is_flagged_on_that_item():
    offer = _offer(items=[_item(10, 2.00, 20.00), _item(300, 2.40, 702.00, description="Lampada")])
    warnings = check_offer(offer).warnings
    assert _fields(warnings) == ["items[1].line_total"]
    assert "702.00" in warnings[0] and "720.00" in warnings[0]


def test_vat_that_is_not_the_rate_of_the_net_is_flagged():
    warnings = check_offer(_offer(total_net=100.00, vat_rate=0.20, vat=21.00)).warnings
    assert _fields(warnings) == ["vat"]


def test_gross_that_is_not_net_plus_vat_is_flagged():
    warnings = check_offer(_offer(total_net=100.00, vat=20.00, total_gross=121.00)).warnings
    assert _fields(warnings) == ["total_gross"]


def test_gross_is_checked_against_the_rate_when_no_vat_amount_is_stated():
    assert _fields(check_offer(_offer(total_net=100.00, vat_rate=0.22, total_gross=123.00)).warnings) == [
        "total_gross"]
    assert check_offer(_offer(total_net=100.00, vat_rate=0.22, total_gross=122.00)).warnings == []


def test_net_total_that_ignores_the_stated_discount_is_flagged():
    offer = _offer(items=[_item(10, 100.00)], discount_rate=0.05, total_net=1000.00)
    warnings = check_offer(offer).warnings
    assert _fields(warnings) == ["total_net"] and "950.00" in warnings[0]


def test_differences_of_a_cent_are_rounding_not_disagreement():
    offer = _offer(items=[_item(3, 0.333)], total_net=1.00, vat_rate=0.19, vat=0.19, total_gross=1.19)
    assert check_offer(offer).warnings == []


def test_sum_is_not_checked_when_an_item_has_no_price():
    offer = _offer(items=[_item(10, 2.00), _item(5)], total_net=999.00)
    assert check_offer(offer).warnings == []


def test_checking_never_changes_stated_numbers_nor_the_input():
    offer = _offer(items=[_item(10, 2.00, 25.00)], total_net=30.00, vat_rate=0.20, vat=7.00, total_gross=40.00)
    before = offer.model_dump()
    checked = check_offer(offer)
    assert offer.model_dump() == before
    after = checked.model_dump()
    assert after.pop("warnings") and {k: v for k, v in before.items() if k != "warnings"} == after
    assert _fields(checked.warnings) == ["items[0].line_total", "total_net", "vat", "total_gross"]


def test_checking_twice_adds_no_duplicate_warnings():
    once = check_offer(_offer(total_net=100.00, vat=20.00, total_gross=130.00))
    assert check_offer(once).warnings == once.warnings


@pytest.mark.parametrize("case", ["whatsapp_en_terse", "docx_it_table"])
def test_fixture_offers_that_add_up_get_no_warnings(case):
    if case == "whatsapp_en_terse":
        text = (FIXTURES / case / "message.txt").read_text(encoding="utf-8")
        offer = extract_offer_offline(text, source="whatsapp", sent_at=datetime.date(2026, 11, 23))
    else:
        docx = pytest.importorskip("docx")
        document = docx.Document(str(FIXTURES / case / "offer.docx"))
        rows = [" | ".join(c.text for c in r.cells) for t in document.tables for r in t.rows]
        offer = extract_offer_offline("\n".join([p.text for p in document.paragraphs] + rows),
                                      source="document", sent_at=None)
    assert check_offer(offer).warnings == []
