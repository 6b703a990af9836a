"""One aiohttp session per event loop for outbound calls: a new session per request costs a connector each time."""
from __future__ import annotations

import asyncio
from typing import Any

_sessions: dict[int, Any] = {}


def session() -> Any:
    """Redirects are the caller's choice per request; the timeout too (`timeout=aiohttp.ClientTimeout(...)`)."""
    import aiohttp

    loop = asyncio.get_running_loop()
    current = _sessions.get(id(loop))
    if current is None or current.closed:
        current = _sessions[id(loop)] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))
    return current
