"""Builds Azure Storage clients from settings: a connection string locally, managed identity in Azure."""
from __future__ import annotations

import asyncio
import weakref
from typing import Any

from ..config import Settings
from ..errors import ServiceUnavailable
from .connection import client_options, expand_connection_string


class PerLoop:
    """What a module makes once per event loop (aio clients must not cross loops), as a dict for each loop.

    The clients hold on to their loop until `close_here` (see `shared.storage.close_clients`); a loop given the id
    of an earlier one that was never closed still gets a dict of its own. One dict operation at a time, so loops
    in several threads may share it."""

    def __init__(self) -> None:
        self._made: dict[int, tuple[weakref.ref, dict[Any, Any]]] = {}

    def here(self) -> dict[Any, Any]:
        """The running loop's dict."""
        loop = asyncio.get_running_loop()
        entry = self._made.get(id(loop))
        if entry is None or entry[0]() is not loop:
            entry = self._made[id(loop)] = (weakref.ref(loop), {})
        return entry[1]

    def forget_here(self) -> dict[Any, Any]:
        """The running loop's dict, no longer kept."""
        loop = asyncio.get_running_loop()
        entry = self._made.pop(id(loop), None)
        return entry[1] if entry is not None and entry[0]() is loop else {}

    async def close_here(self) -> None:
        """Closes the clients the running loop made (their connections), all of them even if one fails, and
        forgets them."""
        closing = [made.close() for made in self.forget_here().values() if hasattr(made, "close")]
        for failed in await asyncio.gather(*closing, return_exceptions=True):
            if isinstance(failed, BaseException):
                raise failed


def blob_service(settings: Settings, **options):
    from azure.storage.blob.aio import BlobServiceClient

    options = {**client_options(), **options}
    if settings.storage_connection:
        return BlobServiceClient.from_connection_string(expand_connection_string(settings.storage_connection), **options)
    from azure.identity.aio import DefaultAzureCredential

    credential = DefaultAzureCredential(managed_identity_client_id=settings.storage_client_id or None)
    return BlobServiceClient(f"https://{settings.storage_account}.blob.core.windows.net", credential=credential,
                             **options)


async def check_storage(settings: Settings) -> float:
    """Seconds one round trip to Blob storage took; raises ServiceUnavailable when it is down or too slow."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        async with blob_service(settings, retry_total=0) as service:
            pages = service.list_containers(results_per_page=1).by_page()
            await asyncio.wait_for(pages.__anext__(), timeout=settings.health_timeout_seconds)
    except StopAsyncIteration:
        pass
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"; the type says why
        raise ServiceUnavailable(f"Storage is not reachable ({type(exc).__name__}).",
                                 code="storage_unreachable") from None
    return loop.time() - started
