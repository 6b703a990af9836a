"""Bytes in Blob storage, addressed by `container/name` references that orchestrations carry instead of bytes."""
from __future__ import annotations

from typing import Any

from ..clock import iso_utc
from ..config import Settings
from .clients import PerLoop, blob_service

_per_loop = PerLoop()  # per loop: "service", and ("container", name) once the container is known to exist
close_loop_clients = _per_loop.close_here


def _service(settings: Settings) -> Any:
    """One async client per event loop: aio clients must not cross loops."""
    made = _per_loop.here()
    if "service" not in made:
        made["service"] = blob_service(settings)
    return made["service"]


class BlobStore:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def _container(self, container: str) -> Any:
        from azure.core.exceptions import ResourceExistsError

        service = _service(self.settings)
        client = service.get_container_client(container)
        made = _per_loop.here()
        if ("container", container) not in made:
            try:
                await client.create_container()
            except ResourceExistsError:
                pass
            made[("container", container)] = True
        return client

    async def put(self, container: str, name: str, data: bytes, content_type: str | None = None) -> str:
        from azure.storage.blob import ContentSettings

        client = await self._container(container)
        await client.upload_blob(name, data, overwrite=True,
                                 content_settings=ContentSettings(content_type=content_type) if content_type else None)
        return f"{container}/{name}"

    async def get(self, ref: str) -> bytes:
        container, _, name = ref.partition("/")
        client = await self._container(container)
        download = await client.download_blob(name)
        return await download.readall()

    async def upload_url(self, container: str, name: str, minutes: int = 15) -> tuple[str, str]:
        """A short-lived URL that lets a client PUT one blob straight into storage (files over the body limit).

        With managed identity it is a user-delegation SAS; with a connection string (Azurite) a service SAS.
        """
        from datetime import datetime, timedelta, timezone

        from azure.storage.blob import BlobSasPermissions, generate_blob_sas

        await self._container(container)
        service = _service(self.settings)
        now = datetime.now(timezone.utc)
        expiry = now + timedelta(minutes=minutes)
        permission = BlobSasPermissions(create=True, write=True)
        if self.settings.storage_connection:
            key = service.credential.account_key
            token = generate_blob_sas(service.account_name, container, name, account_key=key,
                                      permission=permission, expiry=expiry)
        else:
            delegation = await service.get_user_delegation_key(now - timedelta(minutes=5), expiry)
            token = generate_blob_sas(service.account_name, container, name, user_delegation_key=delegation,
                                      permission=permission, expiry=expiry)
        client = service.get_blob_client(container, name)
        return f"{client.url}?{token}", iso_utc(expiry)

    async def size(self, ref: str) -> int | None:
        """The blob's size in bytes, None when there is no such blob."""
        from azure.core.exceptions import ResourceNotFoundError

        container, _, name = ref.partition("/")
        client = await self._container(container)
        try:
            return (await client.get_blob_client(name).get_blob_properties()).size
        except ResourceNotFoundError:
            return None

    async def delete(self, ref: str) -> bool:
        """Deletes one blob; whether there was one."""
        from azure.core.exceptions import ResourceNotFoundError

        container, _, name = ref.partition("/")
        client = await self._container(container)
        try:
            await client.delete_blob(name)
        except ResourceNotFoundError:
            return False
        return True

    async def delete_prefix(self, container: str, prefix: str) -> int:
        """Deletes the blobs whose names start with `prefix`; how many it found (one deleted meanwhile counts)."""
        client = await self._container(container)
        names = [b.name async for b in client.list_blobs(name_starts_with=prefix)]
        for name in names:
            await self.delete(f"{container}/{name}")
        return len(names)
