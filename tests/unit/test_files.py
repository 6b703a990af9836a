"""File types are decided by content, and files that do not open are refused before a job starts."""
from __future__ import annotations

import io
from pathlib import Path

import pytest

from shared import files
from shared.errors import Unprocessable, UnsupportedMediaType

OFFERS = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "offers"


def _png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), "white").save(buffer, format="PNG")
    return buffer.getvalue()


def test_real_files_are_recognised_whatever_was_declared():
    pdf = (OFFERS / "email_en_pdf_attachment" / "Q-55120.pdf").read_bytes()
    assert files.inspect(pdf, "application/octet-stream") == files.FileInfo(files.PDF, 1)
    docx = (OFFERS / "docx_it_table" / "offer.docx").read_bytes()
    assert files.inspect(docx, None, "offer.docx").content_type == files.DOCX
    assert files.inspect(_png(), "image/jpeg").content_type == files.PNG


def test_declared_binary_type_with_other_content_is_refused():
    with pytest.raises(Unprocessable) as refused:
        files.inspect(b"just text", "application/pdf")
    assert refused.value.code == "pdf_corrupt"


@pytest.mark.parametrize("data,declared,code", [
    (b"%PDF-1.4\n%%EOF", "application/pdf", "pdf_corrupt"),
    (b"PK\x03\x04\x14\x00broken", files.DOCX, "docx_corrupt"),
    (b"\xff\xd8\xff\xe0broken", "image/jpeg", "image_corrupt"),
    (b"", "text/plain", "empty_file"),
    (b"\xff\xfe\x00bad", "text/plain", "text_not_utf8"),
    (b"no headers at all", "message/rfc822", "eml_invalid"),
])
def test_broken_files_are_unprocessable(data, declared, code):
    with pytest.raises(Unprocessable) as refused:
        files.inspect(data, declared, "upload")
    assert refused.value.code == code


def test_truncated_png_is_refused():
    with pytest.raises(Unprocessable):
        files.inspect(_png()[:40], "image/png")


def test_unknown_binary_is_unsupported():
    with pytest.raises(UnsupportedMediaType):
        files.inspect(b"\x00\x01\x02binary", "application/x-thing")
