"""Turns an e-mail, PDF, DOCX, image or text into plain text plus page images for extraction."""
from __future__ import annotations

import email
import email.policy
import email.utils
import io
import re
from dataclasses import dataclass, field
from email.message import EmailMessage
from html.parser import HTMLParser

from .. import files as filetypes
from ..ai.port import Image
from ..errors import AppError, Unprocessable

MAX_TEXT_CHARS = 60_000
MAX_IMAGES = 8
MAX_PDF_PAGES = 50  # of one PDF, read for an offer (its text is cut at MAX_TEXT_CHARS anyway)
MAX_FILES = 20  # read from one input, attachments within attachments counted
_MIN_PAGE_TEXT = 20  # a page with less text than this is treated as a scan and rendered


@dataclass
class Normalized:
    text: str = ""
    images: list[Image] = field(default_factory=list)
    subject: str | None = None
    sender: str | None = None
    sent_at: str | None = None
    parts: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # attachments that could not be read, said as warnings

    def add_text(self, text: str, label: str | None = None) -> None:
        text = text.strip()
        if text:
            self.text = (self.text + ("\n\n" if self.text else "") + (f"--- {label} ---\n" if label else "") + text)
            self.text = self.text[:MAX_TEXT_CHARS]


class _TextOfHtml(HTMLParser):
    _BLOCKS = {"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "table", "section"}

    def __init__(self) -> None:
        super().__init__()
        self.chunks: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in self._BLOCKS:
            self.chunks.append("\n")
        elif tag in ("td", "th"):
            self.chunks.append(" | ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip = max(0, self._skip - 1)
        elif tag in self._BLOCKS:
            self.chunks.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.chunks.append(data)


def html_to_text(html: str) -> str:
    parser = _TextOfHtml()
    parser.feed(html)
    text = "".join(parser.chunks)
    return re.sub(r"[ \t]*\n[ \t\n]*", "\n", re.sub(r"[ \t\xa0]+", " ", text)).strip()


def pdf_pages(data: bytes, render_scale: float = 2.0, max_renders: int = MAX_IMAGES,
              max_pages: int = MAX_PDF_PAGES) -> list[tuple[str, bytes | None]]:
    """The text layer of each of the first `max_pages` pages, and a PNG rendering for the first `max_renders` pages
    that have (almost) none: a PDF of a hundred blank pages costs no hundred renderings for images never used."""
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument(data)
    pages = []
    try:
        for number, page in enumerate(document):
            if number >= max_pages:
                break
            text = page.get_textpage().get_text_range().replace("\r\n", "\n")
            png = None
            if len(text.strip()) < _MIN_PAGE_TEXT and max_renders > 0:
                max_renders -= 1
                buffer = io.BytesIO()
                page.render(scale=filetypes.render_scale(page, render_scale)).to_pil().save(buffer, format="PNG")
                png = buffer.getvalue()
            pages.append((text, png))
    finally:
        document.close()
    return pages


def docx_text(data: bytes) -> str:
    """Paragraphs and tables in the order of the document (a table under its heading), each table row as cells
    separated by ' | '. A file that is a sound zip but not a Word document python-docx can read (no
    relationships, broken XML) is `docx_corrupt`."""
    import docx
    from docx.table import Table

    try:
        document = docx.Document(io.BytesIO(data))
        lines = []
        for block in document.iter_inner_content():
            if isinstance(block, Table):
                for row in block.rows:
                    cells = [c.text.strip() for c in row.cells]
                    lines.append(" | ".join(dict.fromkeys(cells)))  # merged cells repeat; keep each once
            elif block.text.strip():
                lines.append(block.text)
    except Exception:  # noqa: BLE001 - python-docx raises KeyError, lxml errors, AttributeError...
        raise Unprocessable("The DOCX file is damaged and cannot be read.", code="docx_corrupt") from None
    return "\n".join(lines)


def add_file(result: Normalized, name: str, content_type: str, data: bytes, depth: int = 0,
             charset: str | None = None) -> None:
    """`charset`: the one an e-mail part declares for its text."""
    label = name if result.text or result.images or depth else None
    if content_type == filetypes.PDF:
        if filetypes.pdf_page_count(data) > MAX_PDF_PAGES:
            result.skipped.append(f"Only the first {MAX_PDF_PAGES} pages of '{name}' were read.")
        for number, (text, png) in enumerate(pdf_pages(data, max_renders=MAX_IMAGES - len(result.images)), start=1):
            result.add_text(text, f"{name} page {number}" if label else None)
            if png is not None and len(result.images) < MAX_IMAGES:
                result.images.append(Image(png, filetypes.PNG))
    elif content_type == filetypes.DOCX:
        result.add_text(docx_text(data), label)
    elif content_type in filetypes.IMAGES:
        if len(result.images) < MAX_IMAGES:
            result.images.append(Image(data, content_type))
    elif content_type == filetypes.EML:
        if depth < MAX_DEPTH:
            add_email(result, data, depth)
    elif content_type == filetypes.HTML:
        result.add_text(html_to_text(filetypes.text_of(data, charset)), label)
    else:
        result.add_text(filetypes.text_of(data, charset), label)
    result.parts.append(f"{name} ({content_type})")


MAX_DEPTH = 3  # e-mails forwarded as attachments, and multiparts within multiparts, are read this deep
_READABLE = (filetypes.PDF, filetypes.DOCX, filetypes.EML, filetypes.TEXT, filetypes.HTML, *filetypes.IMAGES)


def add_email(result: Normalized, data: bytes, depth: int = 0) -> None:
    message = email.message_from_bytes(data, policy=email.policy.default)
    if depth == 0:
        result.subject = str(message.get("Subject") or "") or None
        result.sender = str(message.get("From") or "") or None
        if message.get("Date"):
            try:
                result.sent_at = email.utils.parsedate_to_datetime(str(message["Date"])).date().isoformat()
            except (TypeError, ValueError):
                result.sent_at = None
    _add_parts(result, message, depth)


def _add_parts(result: Normalized, message: EmailMessage, depth: int) -> None:
    """The body of `message` (or of a multipart within it), then its attachments: a forwarded e-mail or a
    multipart among them is read as a message of its own; a file that cannot be opened is skipped and named."""
    body = message.get_body(preferencelist=("plain", "html"))
    if body is not None:
        content = _part_text(body)
        result.add_text(html_to_text(content) if body.get_content_type() == "text/html" else content)
    for part in message.iter_attachments():
        if part.get_content_type() == filetypes.EML or part.is_multipart():
            inner = part.get_content() if part.get_content_type() == filetypes.EML else part
            if depth + 1 < MAX_DEPTH and isinstance(inner, EmailMessage):
                if inner is not part and inner.get("Subject"):
                    label = f"forwarded e-mail {inner.get('From') or ''}".strip()
                    result.add_text(f"Subject: {inner['Subject']}", label)
                _add_parts(result, inner, depth + 1)
            continue
        payload = part.get_payload(decode=True) or b""
        if not payload:
            continue
        name = part.get_filename() or "attachment"
        if len(result.parts) >= MAX_FILES:  # a multipart of 300 files passes the count of top-level attachments
            note = f"More than {MAX_FILES} files: '{name}' and those after it were not read."
            if not any(s.startswith(f"More than {MAX_FILES} files") for s in result.skipped):
                result.skipped.append(note)
            continue
        detected = filetypes.sniff(payload) or filetypes.type_from_name(name) or part.get_content_type()
        if detected not in _READABLE:
            continue
        try:
            if detected not in (filetypes.TEXT, filetypes.HTML):
                filetypes.inspect(payload, detected, name)
            add_file(result, name, detected, payload, depth + 1, charset=part.get_content_charset())
        except AppError as refused:  # a damaged PDF, a DOCX bomb: the rest of the e-mail is still read
            result.skipped.append(f"The attachment '{name}' could not be read ({refused.code}).")


def _part_text(part: EmailMessage) -> str:
    """A text part in the charset it declares; one Python does not know (`iso-8859-8-i`) or that does not fit the
    bytes is read as UTF-8 where it can be, Windows-1252 where not."""
    try:
        content = part.get_content()
        if isinstance(content, str):
            return content
    except (LookupError, UnicodeError):
        pass
    return filetypes.text_of(part.get_payload(decode=True) or b"", None)


def normalize(text: str | None, files: list[tuple[str, str, bytes]]) -> Normalized:
    result = Normalized()
    if text:
        result.add_text(text)
    for name, content_type, data in files:
        if content_type == filetypes.EML:
            add_email(result, data)
        else:
            add_file(result, name, content_type, data)
    return result
