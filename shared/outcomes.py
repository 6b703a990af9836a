"""Activity outcomes as data: success, a failure to retry after a delay, or a failure that is final."""
from __future__ import annotations

from typing import Any, Callable

from .ai.usage import Usage
from .errors import AppError

MAX_RETRY_DELAY = 300.0


def backoff(attempt: int, base: float, retry_after: float | None = None) -> float:
    """`Retry-After` wins when the service sent one; otherwise base, 2×base, 4×base..."""
    delay = retry_after if retry_after is not None else base * 2 ** (attempt - 1)
    return round(min(max(delay, 0.0), MAX_RETRY_DELAY), 3)


def succeeded(value: Any, usage: list[Usage] | None = None) -> dict:
    return {"ok": True, "value": value, "usage": [u.model_dump() for u in usage or []]}


def failed(error: AppError, *, attempt: int, max_attempts: int, base_delay: float,
           usage: list[Usage] | None = None) -> dict:
    retry_in = backoff(attempt, base_delay, error.retry_after) if error.transient and attempt < max_attempts \
        else None
    return {"ok": False, "error": {"code": error.code, "message": error.message}, "retry_in": retry_in,
            "usage": [u.model_dump() for u in usage or []]}


def run(work: Callable[[], tuple[Any, list[Usage]]], *, attempt: int, max_attempts: int, base_delay: float) -> dict:
    """Runs `work`; our errors become outcomes, anything else (a bug, an outage) propagates to Durable retries."""
    try:
        value, usage = work()
    except AppError as error:
        return failed(error, attempt=attempt, max_attempts=max_attempts, base_delay=base_delay, usage=error.usage)
    return succeeded(value, usage)
