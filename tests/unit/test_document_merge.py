"""Merging page results into one document: the caller's fallback text stands in for unread pages, once."""
from __future__ import annotations

from shared.documents.service import merge

FALLBACK = "Whole document, as the caller's OCR read it. " * 1000


def _failed(page: int) -> dict:
    return {"page": page, "failed": True, "error": {"code": "ai_unreachable"}, "text": "", "source": "fallback_text"}


def test_a_fallback_text_is_given_once_however_many_pages_failed():
    pages = [_failed(n) for n in range(1, 51)]
    merged = merge(pages, FALLBACK)
    assert merged["text"] == FALLBACK.strip() and merged["failed_pages"] == list(range(1, 51))


def test_read_pages_come_first_and_the_fallback_closes_the_text_only_when_a_page_failed():
    read = {"page": 1, "text": "RENTAL AGREEMENT", "parties": ["Harbor View"], "fields": [], "signatures": []}
    assert merge([read, _failed(2)], FALLBACK)["text"] == "RENTAL AGREEMENT\n\n" + FALLBACK.strip()
    assert merge([read], FALLBACK)["text"] == "RENTAL AGREEMENT"
    assert merge([_failed(1)], None)["text"] == ""
