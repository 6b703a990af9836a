"""Reads one page through the AI port, and merges page readings into the document result."""
from __future__ import annotations

import io
import re
from collections import Counter
from typing import Any

from .. import files as filetypes
from ..ai import offline
from ..ai.port import AIProvider, ExtractionHints, Image, Result
from ..errors import Unprocessable
from .models import PageExtraction

INSTRUCTIONS = """You read one page of a scanned business document (contract, invoice, delivery note, form).
Return the page's full text in reading order, its layout blocks, the document type if the page shows it,
the parties named on it, its key fields and any signatures.
- Field names are snake_case and say what the value is: monthly_rent, deposit, start_date, term_months,
  invoice_number, total_amount, due_date, currency (ISO 4217 code).
- Values are plain: amounts as numbers without currency or thousands separators (2350.00), dates as
  YYYY-MM-DD, durations as numbers with the unit in the name (term_months: 12).
- A signature counts as signed when the page shows a signature or marks it as signed.
- Never invent: leave out what the page does not show."""
_MIN_TEXT_LAYER = 20
RESERVED = {"document_type", "parties", "signed", "pages", "text", "page_results", "failed_pages", "fields"}


def page_input(*, image: bytes | None, content_type: str | None, pdf: bytes | None,
               page_index: int | None) -> tuple[str, list[Image]]:
    """The page's text layer when it has one, else its image (PDF pages are rendered)."""
    if pdf is not None:
        import pypdfium2 as pdfium

        document = pdfium.PdfDocument(pdf)
        try:
            page = document[page_index]
            text = page.get_textpage().get_text_range().replace("\r\n", "\n").strip()
            if len(text) >= _MIN_TEXT_LAYER:
                return text, []
            buffer = io.BytesIO()
            page.render(scale=filetypes.render_scale(page)).to_pil().save(buffer, format="PNG")
            return "", [Image(buffer.getvalue(), "image/png")]
        finally:
            document.close()
    if image is None:
        raise Unprocessable("The page has no content.", code="empty_page")
    return "", [Image(image, content_type or "image/png")]


def read_page(provider: AIProvider, text: str, images: list[Image], page_number: int,
              total: int) -> Result[PageExtraction]:
    hints = ExtractionHints(source="document", extra={"page": page_number, "pages": total})
    return provider.extract(PageExtraction, instructions=f"{INSTRUCTIONS}\nThis is page {page_number} of {total}.",
                            text=text or None, images=images, hints=hints)


def _typed(kind: str, value: str) -> Any:
    if kind in ("amount", "number"):
        cleaned = re.sub(r"[^\d.,-]", "", value)
        if "," in cleaned and "." in cleaned:
            cleaned = cleaned.replace(",", "") if cleaned.rfind(".") > cleaned.rfind(",") else \
                cleaned.replace(".", "").replace(",", ".")
        elif "," in cleaned:
            cleaned = cleaned.replace(",", ".") if len(cleaned.split(",")[-1]) != 3 else cleaned.replace(",", "")
        try:
            number = float(cleaned)
        except ValueError:
            return value
        return int(number) if kind == "number" and number.is_integer() else number
    if kind == "boolean":
        return value.strip().lower() in ("true", "yes", "1", "signed")
    return value.strip()


def merge(pages: list[dict], fallback_text: str | None = None) -> dict:
    """Page results (in page order) to one document: full text, type, parties, fields, signatures. The caller's
    fallback text, a text of the whole document, ends the full text once when a page could not be read."""
    ordered = sorted(pages, key=lambda p: p["page"])
    types = Counter(p["document_type"].lower() for p in ordered if p.get("document_type"))
    parties: dict[str, None] = {}
    fields: dict[str, Any] = {}
    signatures = []
    for page in ordered:
        for party in page.get("parties", []):
            parties.setdefault(party.strip(), None)
        for item in page.get("fields", []):
            name = re.sub(r"\W+", "_", item["name"].strip().lower()).strip("_")
            if name and name not in RESERVED and name not in fields:
                fields[name] = _typed(item["kind"], item["value"])
        signatures += page.get("signatures", [])
    result: dict[str, Any] = {
        "document_type": types.most_common(1)[0][0] if types else None,
        "parties": list(parties),
        **fields,
        "signed": any(s.get("signed") for s in signatures) if signatures else None,
        "pages": len(ordered),
        "text": "\n\n".join([p["text"] for p in ordered if p.get("text")] + (
            [fallback_text] if fallback_text and any(p.get("failed") for p in ordered) else [])).strip(),
        "fields": fields,
        "signatures": signatures,
        "failed_pages": [p["page"] for p in ordered if p.get("failed")],
        "page_results": ordered,
    }
    return result


def _offline_page(text: str, hints: ExtractionHints) -> dict[str, Any]:
    from .rules import read_page_offline  # patterns compile on first offline use

    return read_page_offline(text)


offline.register_extractor(PageExtraction.__name__, _offline_page)
