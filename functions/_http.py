"""HTTP plumbing shared by the blueprints: JSON responses and the one place errors become HTTP."""
from __future__ import annotations

import functools
import json
import logging
from typing import Any, Awaitable, Callable

import azure.functions as func

from shared.errors import AppError, Unprocessable
from shared.files import MAX_FILE_NAME_CHARS

log = logging.getLogger("intake.http")


def uploaded_files(req: func.HttpRequest) -> list[tuple[str | None, str | None, bytes]]:
    """Every file of a multipart request as (file name, declared type, bytes), in form order."""
    return [(checked_file_name(f.filename), f.content_type, f.read())
            for name in req.files for f in req.files.getlist(name)]


def checked_file_name(name: str | None) -> str | None:
    """A file's name as sent (a form's file, `?filename=`): 422 when longer than a file system takes."""
    if name and len(name) > MAX_FILE_NAME_CHARS:
        raise Unprocessable(f"A file name has at most {MAX_FILE_NAME_CHARS} characters; this one has {len(name):,}.",
                            code="invalid_file_name")
    return name


def uploaded_file(req: func.HttpRequest) -> tuple[str | None, str | None, bytes]:
    """The one file of a multipart request that takes one: more is a 422, not files silently left out."""
    files = uploaded_files(req)
    if len(files) != 1:
        raise Unprocessable(f"Send one file per request; this one holds {len(files)}.", code="too_many_files")
    return files[0]


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
    # "replace": a lone surrogate stored before inputs were cleaned of them must not make a row unreadable
    return func.HttpResponse(json.dumps(body, ensure_ascii=False).encode("utf-8", "replace"), status_code=status,
                             headers=headers, mimetype="application/json", charset="utf-8")


def error_response(error: AppError) -> func.HttpResponse:
    return json_response(error.to_body(), error.status)


def handles_errors(handler: Callable[..., Awaitable[func.HttpResponse]]):
    """AppError becomes its JSON answer; anything else is a bug: a 500 without internals, logged in full."""

    @functools.wraps(handler)
    async def wrapper(*args: Any, **kwargs: Any) -> func.HttpResponse:
        try:
            return await handler(*args, **kwargs)
        except AppError as error:
            return error_response(error)
        except Exception:  # noqa: BLE001
            log.exception("unhandled error in %s", handler.__name__)
            return json_response({"error": {"code": "internal_error",
                                            "message": "Something went wrong on our side; it has been logged."}},
                                 500)

    return wrapper
