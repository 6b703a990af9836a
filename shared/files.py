"""What a file really is, judged by its bytes, and whether it opens: checked before any job starts."""
from __future__ import annotations

import codecs
import email
import email.policy
import io
import re
import zipfile
from dataclasses import dataclass

from .errors import Unprocessable, UnsupportedMediaType

PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
PNG, JPEG, WEBP = "image/png", "image/jpeg", "image/webp"
EML = "message/rfc822"
TEXT = "text/plain"
HTML = "text/html"
IMAGES = {PNG, JPEG, WEBP}
MAX_IMAGE_PIXELS = 64_000_000  # a phone's full-resolution 48-50 MP photo passes (8064 x 6048 is 48.8 M)
MAX_RENDER_PIXELS = 16_000_000  # a PDF page rendered for a vision model: A4 at scale 2 is 2 M
MAX_EML_ATTACHMENTS = 20
MAX_FILE_NAME_CHARS = 255  # of a file's name as sent (most file systems allow no more)
MAX_DOCX_XML_BYTES = 32 << 20
MAX_DOCX_UNPACKED_BYTES = 256 << 20
_ALIASES = {"image/jpg": JPEG, "image/pjpeg": JPEG, "application/x-pdf": PDF, "text/markdown": TEXT,
            "text/x-markdown": TEXT,
            "application/msword+xml": DOCX}
_EXTENSIONS = {".pdf": PDF, ".docx": DOCX, ".png": PNG, ".jpg": JPEG, ".jpeg": JPEG, ".webp": WEBP,
               ".eml": EML, ".txt": TEXT, ".md": TEXT, ".html": HTML, ".htm": HTML}


@dataclass(frozen=True)
class FileInfo:
    content_type: str
    pages: int | None = None


def normalise_type(declared: str | None) -> str:
    base = (declared or "").split(";")[0].strip().lower()
    return _ALIASES.get(base, base)


def type_from_name(name: str | None) -> str | None:
    if not name or "." not in name:
        return None
    return _EXTENSIONS.get(name[name.rfind("."):].lower())


def sniff(data: bytes) -> str | None:
    """The type the bytes say they are; None for text and unknown formats."""
    if data.startswith(b"%PDF-"):
        return PDF
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if data.startswith(b"\xff\xd8\xff"):
        return JPEG
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return WEBP
    if data.startswith(b"PK\x03\x04"):
        return DOCX if b"word/" in data[:4096] or _zip_has(data, "word/document.xml") else "application/zip"
    return None


def _zip_has(data: bytes, name: str) -> bool:
    try:
        return name in zipfile.ZipFile(io.BytesIO(data)).namelist()
    except zipfile.BadZipFile:
        return False


def decode_text(data: bytes) -> str:
    """UTF-8 (a BOM is dropped), or UTF-16 with a BOM or, without one, told by its zero bytes (`O\\x00f\\x00`):
    Windows' Notepad writes it."""
    utf16 = _utf16_encoding(data)
    try:
        return data.decode(utf16) if utf16 else data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise Unprocessable("Text must be UTF-8 encoded.", code="text_not_utf8") from None


_NOT_CHARSETS = {"idna", "punycode", "undefined", "unicode_escape", "raw_unicode_escape"}


def text_codec(charset: str | None) -> str | None:
    """The Python codec of a charset a message names, if it is one for text: `base64`, `zlib`, `rot13` and the like
    turn bytes into bytes, `undefined` and `punycode` are no charsets a sender means (None for those)."""
    if not charset:
        return None
    try:
        codec = codecs.lookup(charset)
    except LookupError:
        return None
    if not getattr(codec, "_is_text_encoding", True) or codec.name.replace("-", "_") in _NOT_CHARSETS:
        return None
    return codec.name


def text_of(data: bytes, charset: str | None) -> str:
    """Text as an e-mail part declares it (`charset`), else as `decode_text` reads it, else as Windows-1252 (the
    usual 8-bit charset of Western mail); never fails: what cannot be decoded is replaced."""
    codec = text_codec(charset)
    if codec:
        try:
            return data.decode(codec)
        except UnicodeError:
            pass
    try:
        return decode_text(data)
    except Unprocessable:
        return data.decode("cp1252", errors="replace")


def _utf16_encoding(data: bytes) -> str | None:
    if data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        return "utf-16"
    sample = data[:4096]
    if len(sample) < 4 or len(sample) % 2:
        return None
    even, odd = sample[0::2].count(0) / (len(sample) / 2), sample[1::2].count(0) / (len(sample) / 2)
    if odd > 0.4 and even < 0.25:  # mostly Latin letters, some characters such as U+2500 or U+4E00 among them
        return "utf-16-le"
    if even > 0.4 and odd < 0.25:
        return "utf-16-be"
    return None


def inspect(data: bytes, declared: str | None, name: str | None = None,
            allowed: frozenset[str] = frozenset({PDF, DOCX, PNG, JPEG, WEBP, EML, TEXT, HTML})) -> FileInfo:
    """Decides the file's type from its content (the declared type only breaks ties for text) and opens it."""
    if not data:
        raise Unprocessable(f"The file {name or ''} is empty.".replace("  ", " "), code="empty_file")
    declared_type = normalise_type(declared)
    if declared_type in ("", "application/octet-stream", "binary/octet-stream"):
        declared_type = type_from_name(name) or declared_type
    actual = sniff(data)
    if actual == "application/zip" and declared_type == DOCX:
        actual = DOCX  # a damaged DOCX: say so rather than "unsupported"
    if actual is None:
        if declared_type in (EML, TEXT, HTML):
            actual = declared_type
        elif declared_type in (PDF, DOCX) or declared_type in IMAGES:
            raise Unprocessable(f"The file is not a valid {declared_type.split('/')[-1].upper()}: its content does "
                                "not match.", code=_corrupt_code(declared_type))
        else:
            raise UnsupportedMediaType(f"Unsupported content type '{declared_type or 'unknown'}'; send PDF, DOCX, "
                                       "PNG, JPEG, WebP, .eml or UTF-8 text.", code="unsupported_media_type")
    if actual not in allowed:
        raise UnsupportedMediaType(f"Files of type {actual} are not accepted here.", code="unsupported_media_type")
    if actual == PDF:
        return FileInfo(PDF, pdf_page_count(data))
    if actual == DOCX:
        _check_docx(data)
    elif actual in IMAGES:
        _check_image(data)
    elif actual == EML:
        _check_eml(data)
    else:
        decode_text(data)
    return FileInfo(actual)


def _corrupt_code(content_type: str) -> str:
    return {PDF: "pdf_corrupt", DOCX: "docx_corrupt"}.get(content_type, "image_corrupt")


def pdf_page_count(data: bytes) -> int:
    import pypdfium2 as pdfium

    try:
        document = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        if "password" in str(exc).lower():
            raise Unprocessable("The PDF is encrypted; send it without a password.", code="pdf_encrypted") from None
        if re.search(rb"/Type\s*/Pages\b[^>]*/Count\s+0\b", data):
            raise Unprocessable("The PDF has no pages.", code="pdf_empty") from None  # PDFium refuses to open those
        raise Unprocessable("The PDF is damaged and cannot be opened.", code="pdf_corrupt") from None
    try:
        pages = len(document)
    finally:
        document.close()
    if pages == 0:
        raise Unprocessable("The PDF has no pages.", code="pdf_empty")
    return pages


def _check_docx(data: bytes) -> None:
    """Opens the archive, its sizes checked before anything is unpacked: a zip bomb is refused, not read."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = {info.filename: info.file_size for info in archive.infolist()}
        if "word/document.xml" not in members or "[Content_Types].xml" not in members:
            raise zipfile.BadZipFile
        if members["word/document.xml"] > MAX_DOCX_XML_BYTES or sum(members.values()) > MAX_DOCX_UNPACKED_BYTES:
            raise Unprocessable(f"The DOCX file unpacks to more than {MAX_DOCX_UNPACKED_BYTES >> 20} MiB (or its "
                                f"text to more than {MAX_DOCX_XML_BYTES >> 20} MiB).", code="docx_too_large")
        if archive.testzip() is not None:
            raise zipfile.BadZipFile
    except (zipfile.BadZipFile, KeyError, OSError, EOFError):
        raise Unprocessable("The DOCX file is damaged and cannot be opened.", code="docx_corrupt") from None


def _check_image(data: bytes) -> None:
    from PIL import Image, UnidentifiedImageError

    too_large = Unprocessable(f"The image has more than {MAX_IMAGE_PIXELS:,} pixels.", code="image_too_large")
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.size[0] * image.size[1] > MAX_IMAGE_PIXELS:  # read from the header, before decoding
                raise too_large
            image.verify()
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except Image.DecompressionBombError:
        raise too_large from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise Unprocessable("The image is damaged or truncated.", code="image_corrupt") from None


def storable_name(name: str) -> str:
    """A file name as the last part of a blob name: its own base name, in safe characters, at most 80 long (no
    `..`, no slashes, nothing Blob storage refuses)."""
    base = re.split(r"[/\\]", name)[-1]
    return re.sub(r"[^\w.\- ]", "_", base)[-80:].strip(". ") or "file"


def render_scale(page: object, wanted: float = 2.0) -> float:
    """`wanted`, or less for a page so large that its rendering would pass MAX_RENDER_PIXELS (a PDF of a few
    hundred bytes may declare a page of 5 by 5 metres)."""
    width, height = page.get_size()  # points
    area = max(width * height, 1.0)
    return min(wanted, (MAX_RENDER_PIXELS / area) ** 0.5)


def _check_eml(data: bytes) -> None:
    try:
        message = email.message_from_bytes(data, policy=email.policy.default)
        attachments = sum(1 for _ in message.iter_attachments())
    except RecursionError:
        raise Unprocessable("The e-mail nests its parts too deeply.", code="eml_invalid") from None
    if attachments > MAX_EML_ATTACHMENTS:
        raise Unprocessable(f"The e-mail has more than {MAX_EML_ATTACHMENTS} attachments.", code="eml_too_many_files")
    if not (message.get("From") or message.get("Subject") or message.get("Content-Type")):
        raise Unprocessable("The e-mail has no headers; send the full .eml file.", code="eml_invalid")
