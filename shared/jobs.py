"""The public job contract: job JSON mapped from an orchestration's status, idempotency keys, waits."""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Literal, Mapping

from .clock import iso_utc
from .errors import BadRequest, Conflict

JobStatus = Literal["accepted", "processing", "done", "failed", "canceled"]

_STATUS_BY_RUNTIME: dict[str, JobStatus] = {
    "Pending": "accepted",
    "Running": "processing",
    "ContinuedAsNew": "processing",
    "Suspended": "processing",
    "Completed": "done",
    "Failed": "failed",
    "Terminated": "canceled",
    "Canceled": "canceled",
}
RUNTIME_BY_STATUS: dict[str, list[str]] = {}
for _runtime, _status in _STATUS_BY_RUNTIME.items():
    RUNTIME_BY_STATUS.setdefault(_status, []).append(_runtime)

FINISHED: frozenset[str] = frozenset({"done", "failed", "canceled"})
JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$"
_JOB_ID = re.compile(JOB_ID_PATTERN)
_TRACE_MARKER = re.compile(r'\s*\n\s*(Traceback|\s*File ").*', re.DOTALL)


@dataclass(frozen=True)
class OrchestrationSnapshot:
    """What the jobs API needs from an orchestration's status, free of the Durable SDK's types."""

    instance_id: str
    name: str
    runtime_status: str
    created_at: datetime | None
    updated_at: datetime | None
    custom_status: Any
    output: Any


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else iso_utc(moment)


def _error_from_failure(output: Any) -> dict:
    """A failed orchestration's output is the host's message; keep the cause, drop any traceback."""
    text = str(output or "The job failed.")
    text = _TRACE_MARKER.sub("", text).strip()
    inner = re.search(r"Activity function '[^']+' failed: (.*)", text, re.DOTALL)
    message = (inner.group(1) if inner else text).strip()
    coded = re.match(r"^\[(?P<code>[a-z0-9_]+)\]\s*(?P<message>.*)$", message, re.DOTALL)
    if coded:
        return {"code": coded.group("code"), "message": coded.group("message").strip()}
    return {"code": "job_failed", "message": message[:2000]}


def newest_first(job: dict) -> tuple[str, str]:
    """The order of job lists (sorted from the highest): by creation, then id."""
    return job["created_at"] or "", job["job_id"]


def job_json(snapshot: OrchestrationSnapshot) -> dict:
    """The job JSON of DESIGN.md. Orchestrators return `{"result", "usage"}` or `{"error", "usage"}`."""
    status: JobStatus = _STATUS_BY_RUNTIME.get(snapshot.runtime_status, "processing")
    output = snapshot.output
    result, error, usage = None, None, None
    if status == "done":
        if isinstance(output, dict) and ("result" in output or "error" in output):
            result, error, usage = output.get("result"), output.get("error"), output.get("usage")
            if error:
                status = "failed"
        else:
            result = output
    elif status == "failed":
        error = _error_from_failure(output)
    elif status == "canceled":
        error = {"code": "canceled", "message": str(output or "The job was canceled.")}
    custom = snapshot.custom_status if isinstance(snapshot.custom_status, dict) else {}
    progress = {"current": custom.get("current", 0), "total": custom.get("total", 0),
                "message": custom.get("message", "")}
    if status == "done" and progress["total"]:
        progress["current"] = progress["total"]
    job = {"job_id": snapshot.instance_id, "type": snapshot.name, "status": status,
           "created_at": _iso(snapshot.created_at), "updated_at": _iso(snapshot.updated_at),
           "progress": progress, "result": result, "error": error, "usage": usage or {}}
    if isinstance(output, dict) and output.get("callback"):
        job["callback"] = output["callback"]  # how the delivery to callback_url went
    return job


def is_finished(job: dict) -> bool:
    return job["status"] in FINISHED


def validate_job_id(job_id: str) -> str:
    if not _JOB_ID.match(job_id or ""):
        raise BadRequest("job_id must be 1-100 letters, digits, '-', '_', '.' or ':'.", code="invalid_job_id")
    return job_id


def request_fingerprint(payload: Any) -> str:
    """A stable hash of what the caller sent, to tell a retry from a different request under the same key."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def job_id_for(kind: str, idempotency_key: str | None) -> str:
    """Same key, same job: the instance id is derived from the key; without one it is random."""
    if idempotency_key is None:
        return f"{kind}-{uuid.uuid4().hex}"
    key = idempotency_key.strip()
    if not key or len(key) > 255:
        raise BadRequest("Idempotency-Key must be 1-255 characters.", code="invalid_idempotency_key")
    return f"{kind}-{hashlib.sha256(key.encode('utf-8', 'surrogatepass')).hexdigest()[:32]}"


def check_same_request(stored_input: Any, fingerprint: str) -> None:
    stored = json.loads(stored_input) if isinstance(stored_input, str) else stored_input
    if not isinstance(stored, dict) or stored.get("fingerprint") != fingerprint:
        raise Conflict("This Idempotency-Key was already used with a different request body.",
                       code="idempotency_key_reused")


def parse_wait(value: str | None, cap: float) -> float:
    if value in (None, ""):
        return 0.0
    try:
        seconds = float(value)
    except ValueError:
        raise BadRequest("wait must be a number of seconds.", code="invalid_wait") from None
    if not 0 <= seconds <= 3600:
        raise BadRequest("wait must be between 0 and 3600 seconds.", code="invalid_wait")
    return min(seconds, cap)


def parse_limit(value: str | None, default: int = 50, maximum: int = 500) -> int:
    if value in (None, ""):
        return default
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= maximum:
        raise BadRequest(f"limit must be an integer from 1 to {maximum}.", code="invalid_limit")
    return int(value)


def query_scope(route: str, params: Mapping[str, str], filters: tuple[str, ...]) -> str:
    """What a continuation token belongs to: the route and the values of its `filters`. A token is refused by
    another route, or by the same one asked with other filters (its offset would count a different list); other
    parameters (`limit`, a cache-buster, one a gateway adds) may change from page to page."""
    values = "&".join(f"{name}={params.get(name) or ''}" for name in filters)
    return hashlib.sha256(f"{route}?{values}".encode(errors="surrogatepass")).hexdigest()[:12]


def encode_continuation(offset: int, scope: str) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}:{scope}".encode()).decode().rstrip("=")


def decode_continuation(token: str | None, scope: str) -> int:
    if not token:
        return 0
    try:
        kind, offset, made_for = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode().split(":")
        if kind != "o" or made_for != scope or not (offset.isascii() and offset.isdigit()) or len(offset) > 12:
            raise ValueError
        return int(offset)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadRequest("continuation is not a token this API returned for this query.",
                         code="invalid_continuation") from None


def page_of(items: list, limit: int, continuation: str | None, scope: str,
            key: Callable[[Any], tuple[str, ...]]) -> tuple[list, str | None]:
    """One page of the items in the order of `key` from the highest (newest first), and the token of the next page
    (None on the last). The token holds the key of the page's last item, not a count: items deleted or added between
    two pages (a caller that deletes what it read, new jobs) make the next page neither skip nor repeat any.
    `key` must tell every item apart; `scope`: see `query_scope`."""
    items = sorted(items, key=key, reverse=True)
    after = _decode_cursor(continuation, scope)
    start = 0 if after is None else next((n for n, item in enumerate(items) if list(key(item)) < after), len(items))
    page = items[start:start + limit]
    more = start + limit < len(items)
    return page, _encode_cursor(list(key(page[-1])), scope) if more else None


def _encode_cursor(after: list[str], scope: str) -> str:
    text = json.dumps({"after": after, "scope": scope}, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode_cursor(token: str | None, scope: str) -> list[str] | None:
    if not token:
        return None
    try:
        cursor = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        after = cursor["after"]
        if cursor["scope"] != scope or not isinstance(after, list) or not all(isinstance(v, str) for v in after):
            raise ValueError
        return after
    except (ValueError, TypeError, KeyError, binascii.Error, UnicodeDecodeError):
        raise BadRequest("continuation is not a token this API returned for this query.",
                         code="invalid_continuation") from None


_EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)
_LATEST = datetime(9000, 1, 1, tzinfo=timezone.utc)


def parse_date(value: str | None, name: str, *, end: bool = False) -> datetime | None:
    """`2026-11-01` (the whole day) or an ISO date-time; naive times are UTC. Dates outside 1970-9000 count as
    those bounds (`0001-01-01` means "from the start"), which storage and the task hub can compare."""
    if not value:
        return None
    try:
        if len(value) == 10:
            moment = datetime.fromisoformat(value).replace(tzinfo=timezone.utc)
            if end:
                moment = moment + timedelta(days=1) - timedelta(microseconds=1) if moment < _LATEST else _LATEST
        else:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{name} must be a date (2026-11-01) or an ISO date-time.", code="invalid_date") from None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    return min(max(moment, _EARLIEST), _LATEST)


def parse_status_filter(value: str | None) -> tuple[list[str], frozenset[str]]:
    """`?status=done,failed`: the runtime statuses to ask the task hub for, and the job statuses to keep of what it
    answers (a job that completed with an error in its output is `failed`: `failed` asks for Completed ones too)."""
    if not value:
        return [], frozenset()
    wanted = list(dict.fromkeys(s.strip() for s in value.split(",") if s.strip()))  # a status named twice: once
    unknown = [s for s in wanted if s not in RUNTIME_BY_STATUS]
    if unknown:
        raise BadRequest(f"Unknown status {', '.join(unknown)}; use one of {', '.join(RUNTIME_BY_STATUS)}.",
                         code="invalid_status")
    runtimes = [runtime for s in wanted for runtime in RUNTIME_BY_STATUS[s]]
    if "failed" in wanted:
        runtimes += RUNTIME_BY_STATUS["done"]
    return list(dict.fromkeys(runtimes)), frozenset(wanted)
