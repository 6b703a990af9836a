"""App data in Azure Table storage (Azurite locally): rows of JSON, inserts that refuse duplicates."""
from __future__ import annotations

import asyncio
import copy
import json
import random
from typing import Any, AsyncIterator, Callable

from ..config import Settings
from ..errors import Conflict, PayloadTooLarge
from .clients import PerLoop
from .connection import NO_ECHO, client_options, expand_connection_string

# per loop: "service", and ("table", name) -> a client made once (building one costs real CPU)
_per_loop = PerLoop()
close_loop_clients = _per_loop.close_here


def _service(settings: Settings) -> Any:
    """One async client per event loop: aio clients must not cross loops."""
    from azure.data.tables.aio import TableServiceClient

    made = _per_loop.here()
    if "service" not in made:
        if settings.storage_connection:
            made["service"] = TableServiceClient.from_connection_string(
                expand_connection_string(settings.storage_connection), **client_options())
        else:
            from azure.identity.aio import DefaultAzureCredential

            credential = DefaultAzureCredential(managed_identity_client_id=settings.storage_client_id or None)
            made["service"] = TableServiceClient(f"https://{settings.storage_account}.table.core.windows.net",
                                                 credential=credential, **client_options())
    return made["service"]


def _key(value: str) -> str:
    """Table keys may not hold / \\ # ? or control characters (C0, DEL and C1)."""
    return "".join(c if c not in "/\\#?" and (32 <= ord(c) < 127 or ord(c) > 159)
                   else f"%{ord(c):02X}" for c in value)


_PROPERTY_CHARS = 30_000  # a string property holds 64 KiB of UTF-16
_ROW_CHARS = 480_000  # an entity holds 1 MiB, a string property two bytes a character (and names, keys, columns)
_BATCH_ROWS = 100  # Table storage refuses larger transactions
# characters of entities in one transaction, whose limit is 4 MiB: rows are stored as ASCII JSON, of which the
# request's JSON makes at most two bytes a character (a backslash or a quote escaped again)
_BATCH_CHARS = 1_800_000


def _row(entity: Any) -> dict:
    text, n = entity["data"], 1
    while f"data{n}" in entity:
        text += entity[f"data{n}"]
        n += 1
    return json.loads(text)


class Tables:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def _table(self, name: str) -> Any:
        from azure.core.exceptions import ResourceExistsError

        made = _per_loop.here()
        client = made.get(("table", name))
        if client is None:
            service = _service(self.settings)
            try:
                await service.create_table(name)
            except ResourceExistsError:
                pass
            client = made[("table", name)] = service.get_table_client(name)
        return client

    @staticmethod
    def _entity(pk: str, rk: str, row: dict, columns: dict | None = None) -> dict:
        """`columns` are copies of a few fields as table properties, so that queries can filter on them.

        The row's JSON is split over `data`, `data1`, `data2`...: a property holds at most 64 KiB.
        """
        text = json.dumps(row, separators=(",", ":"))
        if len(text) > _ROW_CHARS:  # refused by Table storage as a 400; by Azurite only later, at 1 MiB of UTF-8
            raise PayloadTooLarge(f"This is too large to store: {len(text):,} characters as JSON, at most "
                                  f"{_ROW_CHARS:,}.", code="too_large_to_store")
        parts = [text[i:i + _PROPERTY_CHARS] for i in range(0, max(len(text), 1), _PROPERTY_CHARS)]
        return {**(columns or {}), "PartitionKey": _key(pk), "RowKey": _key(rk),
                **{f"data{n or ''}": part for n, part in enumerate(parts)}}

    async def insert(self, table: str, pk: str, rk: str, row: dict, columns: dict | None = None) -> bool:
        """False when the row already exists: how duplicate deliveries are recognised, atomically."""
        return await self.insert_tagged(table, pk, rk, row, columns) is not None

    async def insert_tagged(self, table: str, pk: str, rk: str, row: dict, columns: dict | None = None) -> str | None:
        """`insert` that answers the new row's ETag (for `replace_unchanged`), or None when the row exists."""
        from azure.core.exceptions import ResourceExistsError

        client = await self._table(table)
        try:
            written = await client.create_entity(self._entity(pk, rk, row, columns), response_preference=NO_ECHO)
        except ResourceExistsError:
            return None
        return written["etag"]

    async def replace_unchanged(self, table: str, pk: str, rk: str, row: dict, columns: dict | None,
                                etag: str) -> bool:
        """Writes the row only if it is still as it was at `etag`; False when it was changed or deleted meanwhile."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        client = await self._table(table)
        try:
            await client.update_entity(self._entity(pk, rk, row, columns), mode=UpdateMode.REPLACE, etag=etag,
                                       match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            return False
        return True

    async def upsert(self, table: str, pk: str, rk: str, row: dict, columns: dict | None = None) -> None:
        from azure.data.tables import UpdateMode

        client = await self._table(table)
        await client.upsert_entity(self._entity(pk, rk, row, columns), mode=UpdateMode.REPLACE)

    async def upsert_many(self, table: str, pk: str, rows: dict[str, dict],
                          columns: Callable[[dict], dict] | None = None, *, atomic: bool = False) -> bool:
        """`upsert` of several rows of one partition in as few requests as Table storage allows: one transaction
        per 100 rows or 4 MiB, each all or nothing. `atomic`: in one transaction or not at all (False)."""
        from azure.data.tables import UpdateMode

        client = await self._table(table)
        batches: list[list] = [[]]
        size = 0
        for rk, row in rows.items():
            entity = self._entity(pk, rk, row, columns(row) if columns else None)
            weight = sum(len(v) for v in entity.values() if isinstance(v, str)) + 512  # + the batch part's headers
            if batches[-1] and (len(batches[-1]) == _BATCH_ROWS or size + weight > _BATCH_CHARS):
                batches.append([])
                size = 0
            batches[-1].append(entity)
            size += weight
        if atomic and len(batches) > 1:
            return False
        for batch in batches:
            if len(batch) == 1:  # a transaction of one costs more than the plain request
                await client.upsert_entity(batch[0], mode=UpdateMode.REPLACE)
            elif batch:
                await client.submit_transaction([("upsert", e, {"mode": UpdateMode.REPLACE}) for e in batch])
        return True

    async def change(self, table: str, pk: str, rk: str, change: Callable[[dict], dict], *, create: bool = False,
                     attempts: int = 10, columns: Callable[[dict], dict] | None = None) -> dict | None:
        """Read, `change(row)`, write back only if nobody wrote in between (ETag), else read and change again:
        concurrent writers never undo each other. The row as stored (unchanged rows are not written). A missing
        row is None, not brought back, unless `create`: then `change({})` is inserted. `columns(row)`: the
        queryable copies of fields, as for `insert`."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        client = await self._table(table)
        for attempt in range(attempts):
            if attempt:  # writers that collided spread out instead of colliding again at once
                await asyncio.sleep(random.uniform(0, 0.01 * 2 ** min(attempt, 6)))
            try:
                entity = await client.get_entity(_key(pk), _key(rk))
            except ResourceNotFoundError:
                if not create:
                    return None
                entity = None
            current = _row(entity) if entity is not None else {}
            changed = change(copy.deepcopy(current))  # a change made in place must still count as one
            if entity is not None and changed == current:
                return current
            try:
                written = self._entity(pk, rk, changed, columns(changed) if columns else None)
                if entity is None:
                    await client.create_entity(written, response_preference=NO_ECHO)
                else:
                    await client.update_entity(written, mode=UpdateMode.REPLACE,
                                               etag=entity.metadata["etag"],
                                               match_condition=MatchConditions.IfNotModified)
            except (ResourceModifiedError, ResourceExistsError):
                continue
            except ResourceNotFoundError:
                if not create:
                    return None
                continue
            return changed
        raise Conflict(f"The {table} row '{rk}' kept changing while it was being updated; try again.",
                       code="concurrent_update", transient=True)

    async def query(self, table: str, where: str, parameters: dict | None = None, *,
                    partition: str | None = None) -> AsyncIterator[tuple[str, str, dict]]:
        """Rows matching an OData filter (`Status eq @status`), as (PartitionKey, RowKey, row); within one
        `partition` when given, its key escaped as every write escapes it."""
        parameters = dict(parameters or {})
        if partition is not None:
            # spaces inside the parentheses: the SDK finds @parameters between spaces
            where, parameters["partition_key"] = f"PartitionKey eq @partition_key and ( {where} )", _key(partition)
        client = await self._table(table)
        async for entity in client.query_entities(where, parameters=parameters):
            yield entity["PartitionKey"], entity["RowKey"], _row(entity)

    async def get(self, table: str, pk: str, rk: str) -> dict | None:
        found = await self.get_tagged(table, pk, rk)
        return None if found is None else found[0]

    async def get_tagged(self, table: str, pk: str, rk: str) -> tuple[dict, str] | None:
        """The row and its ETag (for `replace_unchanged`), or None."""
        from azure.core.exceptions import ResourceNotFoundError

        client = await self._table(table)
        try:
            entity = await client.get_entity(_key(pk), _key(rk))
        except ResourceNotFoundError:
            return None
        return _row(entity), entity.metadata["etag"]

    async def partition(self, table: str, pk: str) -> AsyncIterator[tuple[str, dict]]:
        async for rk, row, _ in self.partition_tagged(table, pk):
            yield rk, row

    async def partition_tagged(self, table: str, pk: str) -> AsyncIterator[tuple[str, dict, str]]:
        """`partition` with each row's ETag (for `delete_unchanged`)."""
        client = await self._table(table)
        async for entity in client.query_entities("PartitionKey eq @pk", parameters={"pk": _key(pk)}):
            yield entity["RowKey"], _row(entity), entity.metadata["etag"]

    async def all(self, table: str) -> AsyncIterator[tuple[str, str, dict]]:
        client = await self._table(table)
        async for entity in client.list_entities():
            yield entity["PartitionKey"], entity["RowKey"], _row(entity)

    async def delete(self, table: str, pk: str, rk: str) -> None:
        client = await self._table(table)
        await client.delete_entity(_key(pk), _key(rk))

    async def delete_unchanged(self, table: str, pk: str, rk: str, etag: str) -> bool:
        """Deletes the row only if it is still as it was at `etag`; False when it was written meanwhile (a row
        already gone counts as deleted)."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError

        client = await self._table(table)
        try:
            await client.delete_entity(_key(pk), _key(rk), etag=etag, match_condition=MatchConditions.IfNotModified)
        except ResourceModifiedError:
            return False
        return True
