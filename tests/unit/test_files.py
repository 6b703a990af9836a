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
    (b"\xc3\x28bad \xe9t\xe9", "text/plain", "text_not_utf8"),  # neither UTF-8 nor UTF-16
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


def _zipped(members: dict[str, bytes]) -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_a_docx_that_unpacks_to_too_much_is_refused_before_it_is_unpacked():
    bomb = _zipped({"[Content_Types].xml": b"<Types/>", "word/document.xml": b"\0" * (files.MAX_DOCX_XML_BYTES + 1)})
    assert len(bomb) < 100_000
    with pytest.raises(Unprocessable) as refused:
        files.inspect(bomb, files.DOCX, "bomb.docx")
    assert refused.value.code == "docx_too_large"


def _png_header(width: int, height: int) -> bytes:
    """A PNG that only declares its size (no pixel data): opening it reads no more."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


@pytest.mark.parametrize("size", [(13_000, 13_000), (20_000, 20_000)])  # under and over Pillow's own bomb check
def test_an_image_declaring_too_many_pixels_is_refused_without_decoding_it(size):
    with pytest.raises(Unprocessable) as refused:
        files.inspect(_png_header(*size), files.PNG, "big.png")
    assert refused.value.code == "image_too_large"


def test_a_pdf_page_of_metres_is_rendered_within_the_pixel_budget():
    import pypdfium2 as pdfium

    from shared.offers.normalize import pdf_pages

    document = pdfium.PdfDocument.new()
    document.new_page(14_400, 14_400)  # 5 by 5 metres, in a few hundred bytes
    buffer = io.BytesIO()
    document.save(buffer)
    [(_, png)] = pdf_pages(buffer.getvalue())
    from PIL import Image

    width, height = Image.open(io.BytesIO(png)).size
    assert width * height <= files.MAX_RENDER_PIXELS and width > 1000


def test_an_email_nested_too_deep_or_with_too_many_attachments_is_refused():
    deep = b"From: a@example.com\r\n" + b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (n, n) for n in range(3000))
    with pytest.raises(Unprocessable) as refused:
        files.inspect(deep, files.EML, "deep.eml")
    assert refused.value.code == "eml_invalid"
    from email.message import EmailMessage

    message = EmailMessage()
    message["From"], message["Subject"] = "a@example.com", "offer"
    message.set_content("see attached")
    for n in range(files.MAX_EML_ATTACHMENTS + 1):
        message.add_attachment(b"1 chair 5 EUR", maintype="text", subtype="plain", filename=f"{n}.txt")
    with pytest.raises(Unprocessable) as refused:
        files.inspect(bytes(message), files.EML, "many.eml")
    assert refused.value.code == "eml_too_many_files"


@pytest.mark.parametrize("name,stored", [(".", "file"), ("..", "file"), ("a/..", "file"), ("../../x.pdf", "x.pdf"),
                                         ("c:\\docs\\offer 1.pdf", "offer 1.pdf"), ("ä#?.pdf", "ä__.pdf")])
def test_file_names_become_safe_blob_names(name, stored):
    assert files.storable_name(name) == stored


def test_a_docx_without_its_content_types_is_damaged():
    with pytest.raises(Unprocessable) as refused:
        files.inspect(_zipped({"word/document.xml": b"<w:document/>"}), files.DOCX, "bare.docx")
    assert refused.value.code == "docx_corrupt"


def test_a_full_resolution_phone_photo_is_within_the_pixel_cap():
    with pytest.raises(Unprocessable) as refused:  # this one declares 48.8 M pixels and holds none
        files.inspect(_png_header(8064, 6048), files.PNG, "photo.png")
    assert refused.value.code == "image_corrupt"  # not image_too_large
