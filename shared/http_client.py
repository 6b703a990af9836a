"""One aiohttp session per event loop for outbound calls: a new session per request costs a connector each time."""
from __future__ import annotations

import asyncio
from typing import Any, Callable

_sessions: dict[tuple[int, str], Any] = {}


def session(kind: str = "", resolver: Callable[[], Any] | None = None) -> Any:
    """Redirects are the caller's choice per request; the timeout too (`timeout=aiohttp.ClientTimeout(...)`).

    `kind` names a session of its own, made with `resolver()` as its DNS resolver.
    """
    import aiohttp

    key = (id(asyncio.get_running_loop()), kind)
    current = _sessions.get(key)
    if current is None or current.closed:
        connector = aiohttp.TCPConnector(limit=100, resolver=resolver() if resolver else None)
        current = _sessions[key] = aiohttp.ClientSession(connector=connector)
    return current


async def close_all() -> None:
    """Closes this loop's sessions (a script's end; the Functions worker keeps them for its life)."""
    loop = id(asyncio.get_running_loop())
    for key in [k for k in _sessions if k[0] == loop]:
        await _sessions.pop(key).close()
