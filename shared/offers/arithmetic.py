"""Checks that an offer's stated amounts add up, and reports disagreements as warnings without changing them."""
from __future__ import annotations

from .models import Offer

# A cent of slack for rounding, plus a sliver relative to the amount for float noise on large sums.
_ABSOLUTE_TOLERANCE = 0.01
_RELATIVE_TOLERANCE = 1e-6


def _disagree(stated: float, computed: float) -> bool:
    slack = _ABSOLUTE_TOLERANCE + _RELATIVE_TOLERANCE * max(abs(stated), abs(computed)) + 1e-9
    return abs(stated - computed) > slack


def _money(value: float) -> str:
    return f"{value:,.2f}".replace(",", "")


def _rate(value: float) -> str:
    return f"{value * 100:g} %"


def _item_warnings(offer: Offer) -> list[str]:
    warnings = []
    for index, item in enumerate(offer.items):
        if item.quantity is None or item.unit_price is None or item.line_total is None:
            continue
        computed = round(item.quantity * item.unit_price, 2)
        if _disagree(item.line_total, computed):
            warnings.append(f"items[{index}].line_total: stated {_money(item.line_total)} but "
                            f"{item.quantity:g} × {_money(item.unit_price)} = {_money(computed)} "
                            f"({item.description})")
    return warnings


def _items_sum(offer: Offer) -> float | None:
    """The net the items imply, or None when any item lacks the numbers to say."""
    total = 0.0
    for item in offer.items:
        if item.line_total is not None:
            total += item.line_total
        elif item.quantity is not None and item.unit_price is not None:
            total += item.quantity * item.unit_price
        else:
            return None
    return round(total, 2)


def _total_warnings(offer: Offer) -> list[str]:
    warnings = []
    items_sum = _items_sum(offer) if offer.items else None
    if items_sum is not None and offer.total_net is not None:
        if offer.discount_rate:
            computed = round(items_sum * (1 - offer.discount_rate), 2)
            how = f"items less the {_rate(offer.discount_rate)} discount add up to"
        else:
            computed, how = items_sum, "items add up to"
        if _disagree(offer.total_net, computed):
            warnings.append(f"total_net: stated {_money(offer.total_net)} but {how} {_money(computed)}")
    if offer.total_net is not None and offer.vat_rate is not None and offer.vat is not None:
        computed = round(offer.total_net * offer.vat_rate, 2)
        if _disagree(offer.vat, computed):
            warnings.append(f"vat: stated {_money(offer.vat)} but {_rate(offer.vat_rate)} of "
                            f"{_money(offer.total_net)} is {_money(computed)}")
    if offer.total_net is not None and offer.total_gross is not None:
        if offer.vat is not None:
            computed = round(offer.total_net + offer.vat, 2)
            how = f"net {_money(offer.total_net)} plus VAT {_money(offer.vat)} is"
        elif offer.vat_rate is not None:
            computed = round(offer.total_net * (1 + offer.vat_rate), 2)
            how = f"net {_money(offer.total_net)} plus {_rate(offer.vat_rate)} VAT is"
        else:
            computed = None
        if computed is not None and _disagree(offer.total_gross, computed):
            warnings.append(f"total_gross: stated {_money(offer.total_gross)} but {how} {_money(computed)}")
    return warnings


def check_offer(offer: Offer) -> Offer:
    """A copy of `offer` with a warning for every stated amount that disagrees with the others.

    Stated numbers stay as the supplier wrote them; checking twice adds nothing new.
    """
    found = _item_warnings(offer) + _total_warnings(offer)
    warnings = list(offer.warnings) + [w for w in found if w not in offer.warnings]
    return offer.model_copy(update={"warnings": warnings}, deep=True)
