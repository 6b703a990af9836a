"""Task hub persistence: one partition per orchestration or entity, in memory or in Azure Table storage.

Every row of an instance (its status, history events, inbox messages and activity work items) lives in
the instance's partition, so one episode commits with one atomic table transaction.
"""
from __future__ import annotations

import asyncio
import json
import re
from typing import Iterable, Protocol

STATUS = "status"


class Store(Protocol):
    name: str

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def read_partition(self, pk: str) -> dict[str, dict]: ...
    async def read_row(self, pk: str, rk: str) -> dict | None: ...
    async def write(self, pk: str, upserts: dict[str, dict], deletes: Iterable[str] = ()) -> None: ...
    async def status_rows(self) -> list[dict]: ...
    async def pending_partitions(self) -> set[str]: ...
    async def delete_partition(self, pk: str) -> None: ...
    async def ping(self) -> None: ...


class MemoryStore:
    """The same partitions in a dict: fast tests, and no durability across restarts."""

    name = "memory"

    def __init__(self) -> None:
        self._partitions: dict[str, dict[str, str]] = {}

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    async def read_partition(self, pk: str) -> dict[str, dict]:
        return {rk: json.loads(text) for rk, text in self._partitions.get(pk, {}).items()}

    async def read_row(self, pk: str, rk: str) -> dict | None:
        text = self._partitions.get(pk, {}).get(rk)
        return None if text is None else json.loads(text)

    async def write(self, pk: str, upserts: dict[str, dict], deletes: Iterable[str] = ()) -> None:
        # Rows are kept as JSON text so that nobody shares mutable state with the store, as with a real one.
        encoded = {rk: json.dumps(row) for rk, row in upserts.items()}
        partition = self._partitions.setdefault(pk, {})
        partition.update(encoded)
        for rk in deletes:
            partition.pop(rk, None)

    async def status_rows(self) -> list[dict]:
        return [json.loads(p[STATUS]) for p in self._partitions.values() if STATUS in p]

    async def pending_partitions(self) -> set[str]:
        return {pk for pk, rows in self._partitions.items() if any(rk[0] in "mw" for rk in rows)}

    async def delete_partition(self, pk: str) -> None:
        self._partitions.pop(pk, None)


_CHUNK = 30_000  # characters per string property; Azure Tables allows 64 KiB (UTF-16) per property
_BATCH = 100  # operations per entity-group transaction
_KEY_UNSAFE = re.compile(r"[/\\#?%\x00-\x1f\x7f]")


def _escape_key(value: str) -> str:
    return _KEY_UNSAFE.sub(lambda m: "%{:02X}".format(ord(m.group())), value)


def _unescape_key(value: str) -> str:
    return re.sub(r"%([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), value)


class TableStore:
    """Partitions as Azure Table entities (Azurite locally); the row JSON is split across string properties."""

    name = "azure_storage"

    def __init__(self, connection_string: str, hub: str) -> None:
        from azure.data.tables.aio import TableServiceClient

        self._service = TableServiceClient.from_connection_string(connection_string)
        self._table_name = re.sub(r"[^A-Za-z0-9]", "", hub) + "Instances"
        self._table = self._service.get_table_client(self._table_name)

    async def open(self) -> None:
        from azure.core.exceptions import ResourceExistsError

        try:
            await self._service.create_table(self._table_name)
        except ResourceExistsError:
            pass

    async def close(self) -> None:
        await self._table.close()
        await self._service.close()

    async def ping(self) -> None:
        await self._service.get_service_properties()

    @staticmethod
    def _to_entity(pk: str, rk: str, row: dict) -> dict:
        text = json.dumps(row, separators=(",", ":"))
        entity = {"PartitionKey": _escape_key(pk), "RowKey": rk, "n": 0}
        for i in range(0, max(len(text), 1), _CHUNK):
            entity[f"d{i // _CHUNK}"] = text[i:i + _CHUNK]
            entity["n"] = i // _CHUNK + 1
        if rk == STATUS:  # queryable copies for server-side filters
            entity["Kind"] = row.get("kind", "")
            entity["RuntimeStatus"] = row.get("status", "")
        return entity

    @staticmethod
    def _from_entity(entity: dict) -> dict:
        return json.loads("".join(entity[f"d{i}"] for i in range(int(entity["n"]))))

    async def read_partition(self, pk: str) -> dict[str, dict]:
        query = self._table.query_entities("PartitionKey eq @pk", parameters={"pk": _escape_key(pk)})
        return {e["RowKey"]: self._from_entity(e) async for e in query}

    async def read_row(self, pk: str, rk: str) -> dict | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self._from_entity(await self._table.get_entity(_escape_key(pk), rk))
        except ResourceNotFoundError:
            return None

    async def write(self, pk: str, upserts: dict[str, dict], deletes: Iterable[str] = ()) -> None:
        from azure.core.exceptions import ResourceNotFoundError
        from azure.data.tables import TableTransactionError, UpdateMode

        # The status row goes last: if a multi-batch commit breaks off, the status (history length) still
        # describes the old state, and the rows written ahead of it are overwritten on the retry.
        ordered = sorted(upserts.items(), key=lambda kv: kv[0] == STATUS)
        ops: list[tuple] = [("upsert", self._to_entity(pk, rk, row), {"mode": UpdateMode.REPLACE})
                            for rk, row in ordered]
        status_ops = [op for op in ops if op[1]["RowKey"] == STATUS]
        ops = [op for op in ops if op[1]["RowKey"] != STATUS]
        ops += [("delete", {"PartitionKey": _escape_key(pk), "RowKey": rk}) for rk in deletes]
        ops += status_ops
        for start in range(0, len(ops), _BATCH):
            chunk = ops[start:start + _BATCH]
            try:
                await self._table.submit_transaction(chunk)
            except TableTransactionError:
                # One missing row fails the whole batch: fall back to single operations that tolerate it.
                for op in chunk:
                    try:
                        if op[0] == "delete":
                            await self._table.delete_entity(op[1]["PartitionKey"], op[1]["RowKey"])
                        else:
                            await self._table.upsert_entity(op[1], mode=UpdateMode.REPLACE)
                    except ResourceNotFoundError:
                        pass

    async def status_rows(self) -> list[dict]:
        query = self._table.query_entities("RowKey eq @rk", parameters={"rk": STATUS})
        return [self._from_entity(e) async for e in query]

    async def pending_partitions(self) -> set[str]:
        query = self._table.query_entities(
            "(RowKey ge 'm' and RowKey lt 'n') or (RowKey ge 'w' and RowKey lt 'x')", select=["PartitionKey"])
        return {_unescape_key(e["PartitionKey"]) async for e in query}

    async def delete_partition(self, pk: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        query = self._table.query_entities("PartitionKey eq @pk", parameters={"pk": _escape_key(pk)},
                                           select=["PartitionKey", "RowKey"])
        keys = [e["RowKey"] async for e in query]
        for start in range(0, len(keys), _BATCH):
            ops = [("delete", {"PartitionKey": _escape_key(pk), "RowKey": rk}) for rk in keys[start:start + _BATCH]]
            try:
                await self._table.submit_transaction(ops)
            except Exception:  # noqa: BLE001 - a concurrent delete is fine; finish row by row
                for op in ops:
                    try:
                        await self._table.delete_entity(op[1]["PartitionKey"], op[1]["RowKey"])
                    except ResourceNotFoundError:
                        pass


def open_store(kind: str, connection_string: str | None, hub: str) -> Store:
    if kind == "memory":
        return MemoryStore()
    if not connection_string:
        raise ValueError("AzureWebJobsStorage is not set; use --memory or point it at Azurite")
    return TableStore(connection_string, hub)


async def gather_limited(coros: Iterable, limit: int = 16) -> list:
    semaphore = asyncio.Semaphore(limit)

    async def run(coro):
        async with semaphore:
            return await coro

    return await asyncio.gather(*(run(c) for c in coros))
