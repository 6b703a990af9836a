"""The text of a knowledge-base document, whole and page by page, for chunking (no numpy: the upload route uses it)."""
from __future__ import annotations

from .. import files as filetypes
from ..errors import Unprocessable

MAX_DOCUMENT_PAGES = 1000  # of a PDF in the knowledge base: a longer one is refused at upload


def check_pages(info: filetypes.FileInfo) -> None:
    if info.content_type == filetypes.PDF and (info.pages or 0) > MAX_DOCUMENT_PAGES:
        raise Unprocessable(f"The PDF has {info.pages:,} pages; the knowledge base takes at most "
                            f"{MAX_DOCUMENT_PAGES:,} per document.", code="document_too_long")


def document_pages(content_type: str, data: bytes) -> list[tuple[int | None, str]]:
    """A PDF page by page (each chunk then cites its page), other formats as one text. Unlike an offer's input,
    nothing is cut at 60,000 characters or 50 pages: a manual of a hundred pages is searched to its end."""
    from ..offers.normalize import docx_text, html_to_text, pdf_pages

    if content_type == filetypes.PDF:
        pages = pdf_pages(data, max_renders=0, max_pages=MAX_DOCUMENT_PAGES)
        return [(number, text) for number, (text, _) in enumerate(pages, start=1) if text.strip()]
    if content_type == filetypes.DOCX:
        return [(None, docx_text(data))]
    text = filetypes.text_of(data, None)
    return [(None, html_to_text(text) if content_type == filetypes.HTML else text)]
