"""`POST /api/process-document` bodies (the seed's JSON with page images, a PDF, multipart) parsed and checked."""
from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .. import files as filetypes
from ..errors import BadRequest, PayloadTooLarge, Unprocessable, invalid_body, parse_json_body
from ..jobs import JOB_ID_PATTERN
from ..webhooks import validate_target


@dataclass(frozen=True)
class Limits:
    max_pages: int
    max_page_bytes: int
    max_document_bytes: int


@dataclass
class DocumentRequest:
    """Either page images or one PDF, plus what the caller said about them."""

    images: list[tuple[bytes, str]] = field(default_factory=list)  # (bytes, content type) per page
    pdf: bytes | None = None
    num_pages: int = 0
    file_type: str = ""
    fallback_text: str | None = None
    user_id: str | None = None
    caller_job_id: str | None = None
    callback_url: str | None = None

    def fingerprint_view(self) -> dict:
        import hashlib

        digest = hashlib.sha256()
        for data, _ in self.images:
            digest.update(hashlib.sha256(data).digest())
        if self.pdf:
            digest.update(hashlib.sha256(self.pdf).digest())
        return {"content": digest.hexdigest(), "fallback_text": self.fallback_text, "user_id": self.user_id,
                "job_id": self.caller_job_id, "callback_url": self.callback_url}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    job_id: str | None = Field(None, pattern=JOB_ID_PATTERN, description="names the job: /api/job-status/{job_id}")
    user_id: str | None = Field(None, max_length=200)
    images_base64: list[str] | None = None
    file_base64: str | None = None
    num_pages: int | None = Field(None, ge=0)
    file_type: str | None = Field(None, max_length=100)
    fallback_text: str | None = Field(None, max_length=200_000)
    callback_url: str | None = None

    @field_validator("num_pages", mode="before")
    @classmethod
    def _not_a_bool(cls, value: object) -> object:
        if isinstance(value, bool):  # JSON true is no page count, though Python counts it as 1
            raise ValueError("num_pages must be a number")
        return value


_FORM_FIELDS = ("job_id", "user_id", "num_pages", "fallback_text", "callback_url")


def _b64(text: str, what: str) -> bytes:
    try:
        data = base64.b64decode(text.split(",", 1)[1] if text.startswith("data:") else "".join(text.split()),
                                validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{what} is not valid base64.", code="invalid_base64") from None
    if not data:
        raise Unprocessable(f"{what} is empty.", code="empty_file")
    return data


def _check_sizes(sizes: list[int], limits: Limits) -> None:
    if len(sizes) > limits.max_pages:
        raise Unprocessable(f"The document has {len(sizes)} pages; at most {limits.max_pages} are accepted.",
                            code="too_many_pages")
    for number, size in enumerate(sizes, start=1):
        if size > limits.max_page_bytes:
            raise PayloadTooLarge(f"Page {number} has {size} bytes; the limit is {limits.max_page_bytes}.",
                                  code="page_too_large")
    if sum(sizes) > limits.max_document_bytes:
        raise PayloadTooLarge(f"The document has {sum(sizes)} bytes; the limit is {limits.max_document_bytes}.",
                              code="document_too_large")


def _images(encoded: list[str], limits: Limits) -> list[tuple[bytes, str]]:
    if not encoded:
        raise Unprocessable("images_base64 is empty; send at least one page.", code="no_pages")
    if len(encoded) > limits.max_pages:
        _check_sizes([0] * len(encoded), limits)
    decoded = [_b64(text, f"images_base64[{i}]") for i, text in enumerate(encoded)]
    _check_sizes([len(d) for d in decoded], limits)
    pages = []
    for number, data in enumerate(decoded, start=1):
        info = filetypes.inspect(data, None, f"page {number}", allowed=frozenset(filetypes.IMAGES))
        pages.append((data, info.content_type))
    return pages


def _pdf(data: bytes, limits: Limits) -> tuple[bytes, int]:
    if len(data) > limits.max_document_bytes:
        raise PayloadTooLarge(f"The PDF has {len(data)} bytes; the limit is {limits.max_document_bytes}.",
                              code="document_too_large")
    info = filetypes.inspect(data, filetypes.PDF, "document.pdf", allowed=frozenset({filetypes.PDF}))
    _check_sizes([0] * (info.pages or 0), limits)
    return data, info.pages or 0


def _finish(request: DocumentRequest, declared_pages: int | None, allowed_hosts: str) -> DocumentRequest:
    counted = len(request.images) if request.images else request.num_pages
    if declared_pages is not None and declared_pages != counted:
        raise Unprocessable(f"num_pages is {declared_pages} but the document has {counted} pages.",
                            code="num_pages_mismatch")
    request.num_pages = counted
    if request.callback_url:
        validate_target(request.callback_url, allowed_hosts)
    return request


def parse_json(body: bytes, limits: Limits, allowed_hosts: str = "") -> DocumentRequest:
    parsed = parse_json_body(filetypes.decode_text(body), _Body, "The request body")
    common: dict[str, Any] = {"fallback_text": parsed.fallback_text, "user_id": parsed.user_id,
                              "caller_job_id": parsed.job_id, "callback_url": parsed.callback_url}
    if parsed.images_base64 is not None and parsed.file_base64 is not None:
        raise BadRequest("Send images_base64 or file_base64, not both.", code="ambiguous_input")
    if parsed.file_base64 is not None:
        pdf, pages = _pdf(_b64(parsed.file_base64, "file_base64"), limits)
        request = DocumentRequest(pdf=pdf, num_pages=pages, file_type=filetypes.PDF, **common)
    elif parsed.images_base64 is not None:
        images = _images(parsed.images_base64, limits)
        request = DocumentRequest(images=images, file_type=parsed.file_type or images[0][1], **common)
    else:
        raise BadRequest("Send the pages as images_base64 or a PDF as file_base64.", code="empty_request")
    return _finish(request, parsed.num_pages, allowed_hosts)


def parse_upload(uploads: list[tuple[bytes, str | None, str | None]], fields: dict[str, str], limits: Limits,
                 allowed_hosts: str = "") -> DocumentRequest:
    """A raw PDF or image body, or multipart files (one PDF, or images in page order)."""
    if not uploads or not any(data for data, _, _ in uploads):
        raise BadRequest("No file was sent.", code="empty_request")
    try:  # the form's fields, checked as the JSON body's are (an empty one is not sent)
        form = _Body.model_validate({k: v for k, v in fields.items() if k in _FORM_FIELDS and v != ""})
    except ValidationError as exc:
        raise invalid_body(exc, "The form") from None
    common = {"fallback_text": form.fallback_text, "user_id": form.user_id, "caller_job_id": form.job_id,
              "callback_url": form.callback_url}
    declared = form.num_pages
    first, content_type, name = uploads[0]
    if filetypes.sniff(first) == filetypes.PDF or filetypes.normalise_type(content_type) == filetypes.PDF:
        if len(uploads) > 1:
            raise BadRequest("Send one PDF, or page images.", code="ambiguous_input")
        pdf, pages = _pdf(first, limits)
        return _finish(DocumentRequest(pdf=pdf, num_pages=pages, file_type=filetypes.PDF, **common), declared,
                       allowed_hosts)
    _check_sizes([len(data) for data, _, _ in uploads], limits)
    images = [(data, filetypes.inspect(data, declared_type, filename,
                                       allowed=frozenset(filetypes.IMAGES)).content_type)
              for data, declared_type, filename in uploads]
    return _finish(DocumentRequest(images=images, file_type=images[0][1], **common), declared, allowed_hosts)
