"""Knowledge-base documents are read whole: every page of a long PDF, each chunk citing its page."""
from __future__ import annotations

import io
from pathlib import Path

import pytest

from shared import files as filetypes
from shared.errors import Unprocessable
from shared.whatsapp.kb_documents import MAX_DOCUMENT_PAGES, check_pages, document_pages
from shared.whatsapp.knowledge import chunk_text


AGREEMENT = (Path(__file__).resolve().parents[4] / "shared" / "fixtures" / "documents" / "rental_agreement_3p"
             / "agreement.pdf").read_bytes()


def _long_pdf(copies: int) -> bytes:
    """The 3-page rental agreement `copies` times over."""
    import pypdfium2 as pdfium

    source, document = pdfium.PdfDocument(AGREEMENT), pdfium.PdfDocument.new()
    for _ in range(copies):
        document.import_pages(source)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def test_every_page_of_a_long_pdf_is_read_and_cited():
    pages = document_pages(filetypes.PDF, _long_pdf(150))
    assert [number for number, _ in pages] == list(range(1, 451))  # an offer reads 50 pages and 60,000 characters
    assert sum(len(text) for _, text in pages) > 60_000 and pages[449][1] == pages[2][1]
    chunks = chunk_text(pages)
    assert chunks[-1].page_end == 450


def test_text_and_html_documents_are_read_whole():
    long = "Rule. " * 20_000  # 120,000 characters
    assert document_pages(filetypes.TEXT, long.encode()) == [(None, long)]
    assert document_pages(filetypes.HTML, b"<p>Rent: 2,350 EUR</p>") == [(None, "Rent: 2,350 EUR")]


def test_a_pdf_longer_than_the_knowledge_base_takes_is_refused_at_upload():
    check_pages(filetypes.FileInfo(filetypes.PDF, MAX_DOCUMENT_PAGES))
    with pytest.raises(Unprocessable) as refused:
        check_pages(filetypes.FileInfo(filetypes.PDF, MAX_DOCUMENT_PAGES + 1))
    assert refused.value.code == "document_too_long"
