"""Builds Azure Storage clients from settings: a connection string locally, managed identity in Azure."""
from __future__ import annotations

import asyncio

from ..config import Settings
from ..errors import ServiceUnavailable
from .connection import client_options, expand_connection_string


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
