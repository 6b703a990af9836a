"""Blob and Table storage adapters."""
from __future__ import annotations


async def close_clients() -> None:
    """Closes the storage clients made for the running event loop: a loop that ends should call it, or aiohttp
    reports their sessions unclosed."""
    from . import blobs, tables

    await tables.close_loop_clients()
    await blobs.close_loop_clients()
