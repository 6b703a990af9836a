"""`POST /api/ingest` bodies (JSON, base64 files, multipart, raw files) parsed and checked before a job starts."""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .. import files as filetypes
from ..errors import (BadRequest, PayloadTooLarge, Unprocessable, UnsupportedMediaType, decode_json, invalid_body,
                      parse_json_body)
from ..webhooks import validate_target
from .models import Source

INLINE_TEXT_LIMIT = 32 * 1024  # larger texts go to Blob storage; orchestration inputs stay small
MAX_FILES = 20  # per offer, in JSON or multipart
MAX_PDF_PAGES = 100  # each page is read, and pages without text are rendered for the model


class IngestFile(BaseModel):
    name: str
    content_type: str
    data: bytes = Field(repr=False, exclude=True)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


class IngestRequest(BaseModel):
    text: str | None = None
    files: list[IngestFile] = Field(default_factory=list)
    source: Source | None = None
    subject: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    callback_url: str | None = None

    def fingerprint_view(self) -> dict:
        """What makes two requests the same request, without the bytes."""
        return {"text": hashlib.sha256((self.text or "").encode()).hexdigest(),
                "files": [[f.name, f.content_type, f.sha256] for f in self.files],
                "source": self.source, "subject": self.subject, "metadata": self.metadata,
                "callback_url": self.callback_url}


class _JsonFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field("upload", max_length=filetypes.MAX_FILE_NAME_CHARS)
    content_base64: str
    content_type: str | None = None


class _JsonBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str | None = None
    source: Source | None = None
    subject: str | None = Field(None, max_length=500)
    metadata: dict[str, Any] = Field(default_factory=dict)
    callback_url: str | None = None
    file: _JsonFile | None = None
    files: list[_JsonFile] = Field(default_factory=list, max_length=MAX_FILES)

    @field_validator("metadata")
    @classmethod
    def _small_metadata(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(json.dumps(value)) > 8192:
            raise ValueError("metadata must stay under 8 KB")
        return value


def _decode_base64(text: str, name: str) -> bytes:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"file '{name}': content_base64 is not valid base64.", code="invalid_base64") from None


def _file(name: str, declared: str | None, data: bytes) -> IngestFile:
    info = filetypes.inspect(data, declared, name)
    if (info.pages or 0) > MAX_PDF_PAGES:
        raise Unprocessable(f"{name} has {info.pages} pages; an offer may have at most {MAX_PDF_PAGES}.",
                            code="too_many_pages")
    return IngestFile(name=name, content_type=info.content_type, data=data)


def _readable(text: str) -> bool:
    """Whether the text holds anything to read: NULs and other control characters alone (a blank form field, a
    zeroed buffer) do not count, nor does white space."""
    return any(c.isprintable() and not c.isspace() for c in text)


def _finish(body: _JsonBody | dict, files: list[IngestFile], allowed_hosts: str) -> IngestRequest:
    data = body.model_dump(exclude={"file", "files"}) if isinstance(body, BaseModel) else body
    text = data.get("text")
    if text is not None and not _readable(text):
        text = None
    if text is None and not files:
        raise BadRequest("Send the offer as `text` or as a file.", code="empty_request")
    if data.get("callback_url"):
        validate_target(data["callback_url"], allowed_hosts)
    return IngestRequest(text=text, files=files, source=data.get("source"), subject=data.get("subject"),
                         metadata=data.get("metadata") or {}, callback_url=data.get("callback_url"))


def parse_json(body: bytes, allowed_hosts: str = "") -> IngestRequest:
    parsed = parse_json_body(filetypes.decode_text(body), _JsonBody, "The request body")
    files = [_file(f.name, f.content_type, _decode_base64(f.content_base64, f.name))
             for f in ([parsed.file] if parsed.file else []) + parsed.files]
    return _finish(parsed, files, allowed_hosts)


def parse_form(fields: dict[str, str], uploads: list[tuple[str, str | None, bytes]],
               allowed_hosts: str = "") -> IngestRequest:
    """multipart/form-data as Make.com's HTTP module sends it: fields plus any number of files."""
    data: dict[str, Any] = {k: v for k, v in fields.items() if k in ("text", "source", "subject", "callback_url")}
    if fields.get("metadata"):
        data["metadata"] = decode_json(fields["metadata"], "The metadata field", "invalid_metadata")
    try:
        parsed = _JsonBody.model_validate(data)
    except ValidationError as exc:
        raise invalid_body(exc) from None
    if len(uploads) > MAX_FILES:
        raise Unprocessable(f"An offer may come with at most {MAX_FILES} files.", code="too_many_files")
    files = [_file(name or "upload", declared, content) for name, declared, content in uploads if content]
    if not files and uploads:
        raise Unprocessable("The uploaded file is empty.", code="empty_file")
    if not files and not _readable(parsed.text or ""):
        raise BadRequest("The form has no file and no text field.", code="empty_request")
    return _finish(parsed, files, allowed_hosts)


def parse_raw(content_type: str, body: bytes, *, name: str | None, source: str | None = None,
              callback_url: str | None = None, allowed_hosts: str = "") -> IngestRequest:
    """A raw .eml, PDF, DOCX, image or text body; `?source=` and `?callback_url=` may ride along."""
    declared = filetypes.normalise_type(content_type)
    try:
        extra = _JsonBody.model_validate({"source": source, "callback_url": callback_url})
    except ValidationError as exc:
        raise invalid_body(exc) from None
    if declared == filetypes.TEXT and filetypes.sniff(body) not in _FILES:
        return _finish(extra.model_dump() | {"text": declared_text(content_type, body)}, [], allowed_hosts)
    if declared == filetypes.TEXT:  # a PDF or image sent as text/plain (a tool's default): its bytes say what it is
        declared = filetypes.sniff(body) or declared
    guessed = {filetypes.EML: "message.eml", filetypes.PDF: "offer.pdf", filetypes.DOCX: "offer.docx",
               filetypes.PNG: "image.png", filetypes.JPEG: "image.jpg", filetypes.WEBP: "image.webp",
               filetypes.HTML: "offer.html"}
    if declared not in guessed and declared not in ("application/octet-stream", ""):
        raise UnsupportedMediaType(f"Content-Type '{declared}' is not supported; send JSON, multipart/form-data, "
                                   "message/rfc822, application/pdf, DOCX, PNG, JPEG, WebP, text/html or "
                                   "text/plain.", code="unsupported_media_type")
    return _finish(extra, [_file(name or guessed.get(declared, "upload"), declared, body)], allowed_hosts)


_FILES = {filetypes.PDF, filetypes.DOCX, *filetypes.IMAGES}
_CHARSET = re.compile(r";\s*charset\s*=\s*\"?([A-Za-z0-9._:-]{1,40})", re.IGNORECASE)


def declared_text(content_type: str, body: bytes) -> str:
    """A text/plain body in the charset its Content-Type names (`; charset=windows-1252`), else UTF-8 or UTF-16."""
    named = _CHARSET.search(content_type)
    codec = filetypes.text_codec(named.group(1)) if named else None
    if named is None or codec == "utf-8":
        return filetypes.decode_text(body)
    try:
        if codec is None:
            raise LookupError
        return body.decode(codec).removeprefix("\ufeff")
    except (LookupError, UnicodeError):
        raise Unprocessable(f"The text is not valid {named.group(1)}, the charset its Content-Type names.",
                            code="text_not_utf8") from None


def check_size(length: int, limit: int) -> None:
    if length > limit:
        raise PayloadTooLarge(f"The body has {length} bytes; the limit is {limit}.", code="payload_too_large")
