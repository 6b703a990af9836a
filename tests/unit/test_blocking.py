"""Blocking calls run on a pool wide enough for a fan-out of model calls, with the caller's context."""
from __future__ import annotations

import asyncio
import contextvars
import os
import threading

from shared.blocking import in_thread

REQUEST = contextvars.ContextVar("request", default=None)


def test_more_blocking_calls_wait_at_once_than_asyncio_default_pool_allows():
    width = min(32, (os.cpu_count() or 1) + 4) + 4  # wider than asyncio.to_thread's pool
    all_waiting = threading.Barrier(width, timeout=10)

    async def main() -> list[int]:
        return await asyncio.gather(*(in_thread(all_waiting.wait) for _ in range(width)))

    assert sorted(asyncio.run(main())) == list(range(width))  # each call saw all the others waiting


def test_the_call_sees_the_callers_context_variables_and_its_exceptions_reach_the_caller():
    async def main() -> str | None:
        REQUEST.set("job-7")
        return await in_thread(REQUEST.get)

    assert asyncio.run(main()) == "job-7"

    async def failing() -> None:
        await in_thread(int, "not a number")

    try:
        asyncio.run(failing())
    except ValueError as error:
        assert "not a number" in str(error)
    else:
        raise AssertionError("the exception was lost")
