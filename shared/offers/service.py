"""The offer pipeline's work: normalise the input, detect its language, extract the offer, check its sums."""
from __future__ import annotations

from datetime import date
from typing import Any

from ..ai import offline
from ..ai.port import AIProvider, ExtractionHints, Result
from ..errors import Unprocessable
from .arithmetic import check_offer
from .language import detect_language
from .models import Offer
from .normalize import Normalized, normalize

INSTRUCTIONS = """You extract supplier price offers for a small business's purchasing team.
Return one JSON object in the given schema, from the message and any attached pages.
- is_offer is false when the message is not a price offer (newsletters, invitations, questions); then items is empty and every other field is null.
- Keep numbers as the supplier stated them: amounts are plain numbers without currency symbols or thousands separators; rates are fractions (20 % -> 0.2).
- Never correct the supplier's arithmetic and never invent values: leave a field null when the text does not give it. Leave warnings empty.
- quantity is the number of units priced by unit_price; derive it when stated as packs x units (2 pallets of 40 boxes -> 80 boxes).
- Shipping or delivery charges are items with quantity 1.
- currency is an ISO 4217 code ($ -> USD unless the text says otherwise); language is the ISO 639-1 code of the message.
- Dates are ISO (YYYY-MM-DD); resolve relative ones ("valid 30 days", "end of month", "Friday 27.11.") against the date the message was sent.
- unit is normalised: pcs, unit, box, roll, kg, g, m, l, h, pallet, set."""


def _offline_offer(text: str, hints: ExtractionHints) -> dict[str, Any]:
    from .rules import extract_offer_offline  # its many patterns compile at import: only when offline is used

    sent = date.fromisoformat(hints.sent_at) if hints.sent_at else None
    offer = extract_offer_offline(text, source=hints.source, sent_at=sent, subject=hints.subject,
                                  sender=hints.sender)
    return offer.model_dump()


offline.register_extractor(Offer.__name__, _offline_offer)


def read_input(text: str | None, files: list[tuple[str, str, bytes]]) -> Normalized:
    normalized = normalize(text, files)
    if not normalized.text.strip() and not normalized.images:
        raise Unprocessable("Nothing readable was found in the input.", code="no_content")
    return normalized


def extract_offer(normalized: Normalized, provider: AIProvider, *, source: str | None,
                  received_on: str) -> Result[Offer]:
    language = detect_language(normalized.text) if normalized.text.strip() else None
    hints = ExtractionHints(source=source, subject=normalized.subject, sender=normalized.sender,
                            sent_at=normalized.sent_at or received_on, language=language)
    result = provider.extract(Offer, instructions=INSTRUCTIONS, text=normalized.text, images=normalized.images,
                              hints=hints)
    offer = result.value
    if offer.is_offer and offer.language is None and language:
        offer = offer.model_copy(update={"language": language})
    if not offer.is_offer:
        offer = Offer(is_offer=False, language=offer.language or language)
    checked = check_offer(offer)
    if normalized.skipped:
        checked = checked.model_copy(update={"warnings": [*checked.warnings, *normalized.skipped]})
    return Result(checked, result.usage)
