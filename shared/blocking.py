"""Blocking calls (model requests, SMTP, audio work) off the event loop, on one pool sized for waiting, not cores."""
from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

T = TypeVar("T")
THREADS = 64  # model calls and SMTP sessions waiting at once in one worker; they wait, they do not compute
_pool: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    """asyncio's default pool has cores + 4 threads: on two cores six model calls at once, whatever the fan-out."""
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(THREADS, thread_name_prefix="blocking")
        return _pool


async def in_thread(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """`fn(*args, **kwargs)` on the blocking pool, with the caller's context variables, as `asyncio.to_thread`."""
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(_executor(), call)
