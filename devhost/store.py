"""Task hub persistence: one partition per orchestration or entity, in memory or in Azure Table storage.

Every row of an instance (its status, history events, inbox messages, activity work items and outbox)
lives in the instance's partition, so one episode commits in one atomic write.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import time
import uuid
import weakref
from collections import OrderedDict
from typing import Iterable, Iterator, Protocol

from shared.storage.connection import NO_ECHO, client_options

STATUS = "status"


class Store(Protocol):
    name: str

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def read_partition(self, pk: str) -> dict[str, dict]: ...
    async def read_row(self, pk: str, rk: str) -> dict | None: ...
    async def write(self, pk: str, upserts: dict[str, dict], deletes: Iterable[str] = ()) -> None: ...
    async def create(self, pk: str, rows: dict[str, dict]) -> bool: ...
    async def status_rows(self) -> list[dict]: ...
    async def pending_partitions(self) -> set[str]: ...
    async def delete_partition(self, pk: str) -> None: ...
    async def ping(self) -> None: ...
    async def claim(self, wait: float) -> None: ...
    async def renew(self) -> None: ...
    async def release(self) -> None: ...


class HubBusy(RuntimeError):
    """Another live devhost holds the task hub: two hosts on one hub would overwrite each other's state."""


class HubLost(RuntimeError):
    """This host's lease on the task hub was taken by another host."""


def _pending(row_keys: Iterable[str]) -> bool:
    """Whether a partition holds work for a host: messages, activity work items or an outbox to deliver."""
    return any(rk[0] in "mwo" for rk in row_keys)


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

    async def claim(self, wait: float) -> None:
        return None  # nobody else can see this process's memory

    async def renew(self) -> None:
        return None

    async def release(self) -> None:
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

    async def create(self, pk: str, rows: dict[str, dict]) -> bool:
        """Inserts the rows only if the partition has none of them: False when any exists."""
        partition = self._partitions.get(pk, {})
        if any(rk in partition for rk in rows):
            return False
        await self.write(pk, rows)
        return True

    async def status_rows(self) -> list[dict]:
        return [json.loads(p[STATUS]) for p in self._partitions.values() if STATUS in p]

    async def pending_partitions(self) -> set[str]:
        return {pk for pk, rows in self._partitions.items() if _pending(rows)}

    async def delete_partition(self, pk: str) -> None:
        self._partitions.pop(pk, None)


_CHUNK = 30_000  # characters per string property; Azure Tables allows 64 KiB (UTF-16) per property
# An entity holds at most 1 MiB: Azure counts two bytes a character, Azurite the UTF-8 of the request, where the
# JSON text (ASCII) takes at most two bytes a character (a quote or backslash escaped again).
_ENTITY_CHARS = 420_000
_META_CHARS = 100_000  # of the status kept beside the data; of a larger one (a large input, say), what is small
_META_FIELD_CHARS = 10_000
_MAIN = ""  # RowKey of the entity that holds an instance; its spill entities: see `_spill_keys`
_KEY_UNSAFE = re.compile(r"[/\\#?%\x00-\x1f\x7f]")
_CACHED_PARTITIONS = 4096
_LEASE_KEY = ("~host", "lease")  # outside every instance query, which all ask for RowKey ''
LEASE_SECONDS = 15.0


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _escape_key(value: str) -> str:
    return _KEY_UNSAFE.sub(lambda m: "%{:02X}".format(ord(m.group())), value)


def _unescape_key(value: str) -> str:
    return re.sub(r"%([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), value)


def _chunks(prefix: str, text: str) -> dict[str, str]:
    return {f"{prefix}{i // _CHUNK}": text[i:i + _CHUNK] for i in range(0, max(len(text), 1), _CHUNK)}


def _joined(entity: dict, prefix: str) -> str:
    return "".join(entity[f"{prefix}{i}"] for i in range(int(entity.get(f"{prefix}n", 0))))


def _spill_keys(main: dict) -> list[str]:
    """Row keys of the spill entities a main entity names: `y<generation>-<n>`, or `x<n>` as written before."""
    generation = main.get("gen")
    return [f"y{generation}-{n}" if generation else f"x{n}" for n in range(1, int(main.get("spills", 0)) + 1)]


class TableStore:
    """Each instance is one Azure Table entity (Azurite locally) holding all its rows as JSON.

    A state change is then one entity upsert, atomic by itself and several times cheaper than an
    entity-group transaction. Partitions larger than one entity spill into a few more entities of the
    same partition (see `_save`). Only this process writes the hub, so the store keeps
    each partition it has seen and merges row changes into it before saving.
    """

    name = "azure_storage"

    def __init__(self, connection_string: str, hub: str) -> None:
        from azure.data.tables.aio import TableServiceClient

        self._service = TableServiceClient.from_connection_string(connection_string, **client_options())
        self._table_name = re.sub(r"[^A-Za-z0-9]", "", hub) + "Instances"
        self._table = self._service.get_table_client(self._table_name)
        # pk -> (rows, row keys of its spill entities)
        self._cache: OrderedDict[str, tuple[dict[str, dict], list[str]]] = OrderedDict()
        # A write merges into the cached partition and replaces the stored one: two at once on one partition
        # would each replace it without the other's rows, so they take turns.
        self._partition_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._owner = uuid.uuid4().hex
        self._lease_etag: str | None = None

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

    # The store caches what it wrote, so exactly one host may write a hub. Like the Durable extension's
    # partition leases, a lease entity names the owner; it lapses when the owner stops renewing it, and a
    # crashed owner on this machine (a `kill -9` before a restart) gives it up at once.

    def _lease_entity(self) -> dict:
        return {"PartitionKey": _LEASE_KEY[0], "RowKey": _LEASE_KEY[1], "Owner": self._owner, "Pid": os.getpid(),
                "Hostname": socket.gethostname(), "Expires": time.time() + LEASE_SECONDS}

    async def _write_lease(self, etag: str | None) -> bool:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError
        from azure.data.tables import UpdateMode

        try:
            if etag is None:
                written = await self._table.create_entity(self._lease_entity(), response_preference=NO_ECHO)
            else:
                written = await self._table.update_entity(self._lease_entity(), mode=UpdateMode.REPLACE, etag=etag,
                                                          match_condition=MatchConditions.IfNotModified)
        except (ResourceExistsError, ResourceModifiedError):
            return False
        self._lease_etag = written["etag"]
        return True

    async def _read_lease(self) -> dict | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return await self._table.get_entity(*_LEASE_KEY)
        except ResourceNotFoundError:
            return None

    async def claim(self, wait: float) -> None:
        deadline = time.monotonic() + wait
        while True:
            lease = await self._read_lease()
            if lease is None:
                if await self._write_lease(None):
                    return
                continue
            free = (lease["Owner"] == self._owner or lease["Expires"] < time.time()
                    or (lease["Hostname"] == socket.gethostname() and not _process_alive(int(lease["Pid"]))))
            if free and await self._write_lease(lease.metadata["etag"]):
                return
            if not free and time.monotonic() > deadline:
                raise HubBusy(f"task hub {self._table_name} is in use by devhost pid {lease['Pid']} on "
                              f"{lease['Hostname']}: stop that host or give this one another hub (--hub)")
            await asyncio.sleep(0.5)

    async def renew(self) -> None:
        if not await self._write_lease(self._lease_etag):
            lease = await self._read_lease()
            raise HubLost(f"task hub {self._table_name} was taken by devhost pid "
                          f"{lease['Pid'] if lease else '?'}; this host stops processing it")

    async def release(self) -> None:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        if self._lease_etag is None:
            return
        try:
            await self._table.delete_entity(*_LEASE_KEY, etag=self._lease_etag,
                                            match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            pass
        self._lease_etag = None

    def _partition_lock(self, pk: str) -> asyncio.Lock:
        lock = self._partition_locks.get(pk)
        if lock is None:
            lock = self._partition_locks[pk] = asyncio.Lock()
        return lock

    def _remember(self, pk: str, rows: dict[str, dict], spills: list[str]) -> None:
        self._cache[pk] = (rows, spills)
        self._cache.move_to_end(pk)
        while len(self._cache) > _CACHED_PARTITIONS:
            self._cache.popitem(last=False)

    def _entities(self, pk: str, rows: dict[str, dict]) -> list[dict]:
        """The main entity (the status, for cheap status reads, and the start of the data), then the spills: each
        within an entity's 1 MiB. Spills are named after a new generation each time (see `_save`)."""
        key = _escape_key(pk)
        text = json.dumps(rows, separators=(",", ":"))
        status = rows.get(STATUS, {})
        meta = json.dumps(status, separators=(",", ":"))
        if len(meta) > _META_CHARS:  # the whole status is among the rows: a read of it reads them (`_status_of`)
            small = {k: v for k, v in status.items() if len(json.dumps(v)) <= _META_FIELD_CHARS}
            meta = json.dumps({**small, "large": True}, separators=(",", ":"))
        first = max(_ENTITY_CHARS - len(meta), 0)
        parts = [text[:first]] + [text[i:i + _ENTITY_CHARS] for i in range(first, len(text), _ENTITY_CHARS)]
        generation = uuid.uuid4().hex[:12] if len(parts) > 1 else ""
        main = {"PartitionKey": key, "RowKey": _MAIN, "dn": len(_chunks("d", parts[0])), "spills": len(parts) - 1,
                "gen": generation, **_chunks("d", parts[0]), "mn": len(_chunks("m", meta)), **_chunks("m", meta),
                "Kind": status.get("kind", ""), "RuntimeStatus": status.get("status", ""),
                "Pending": _pending(rows)}
        spill = [{"PartitionKey": key, "RowKey": rk, "dn": len(_chunks("d", part)), **_chunks("d", part)}
                 for rk, part in zip(_spill_keys(main), parts[1:])]
        return [main, *spill]

    async def _fetch(self, pk: str) -> tuple[dict[str, dict], list[str]] | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            main = await self._table.get_entity(_escape_key(pk), _MAIN)
        except ResourceNotFoundError:
            return None
        text = _joined(main, "d")
        spills = _spill_keys(main)
        for rk in spills:
            text += _joined(await self._table.get_entity(_escape_key(pk), rk), "d")
        return json.loads(text), spills

    async def _rows(self, pk: str) -> tuple[dict[str, dict], list[str]]:
        if pk in self._cache:
            self._cache.move_to_end(pk)
            return self._cache[pk]
        found = await self._fetch(pk)
        return found if found is not None else ({}, [])

    async def read_partition(self, pk: str) -> dict[str, dict]:
        rows, spills = await self._rows(pk)
        self._remember(pk, rows, spills)
        return json.loads(json.dumps(rows))

    async def read_row(self, pk: str, rk: str) -> dict | None:
        from azure.core.exceptions import ResourceNotFoundError

        if pk in self._cache:
            row = self._cache[pk][0].get(rk)
            return None if row is None else json.loads(json.dumps(row))
        if rk == STATUS:  # the status alone is kept apart so that reading it stays cheap
            try:
                entity = await self._table.get_entity(_escape_key(pk), _MAIN, select=["mn"] + [f"m{i}" for i in range(40)])
            except ResourceNotFoundError:
                return None
            return await self._status_of(pk, _joined(entity, "m"))
        rows, _ = await self._rows(pk)
        return rows.get(rk)

    async def _status_of(self, pk: str, meta: str) -> dict | None:
        """The status an instance's main entity keeps beside its data; one too large to keep there, from the data."""
        status = json.loads(meta) if meta and meta != "{}" else None
        if status is not None and status.get("large"):
            rows, _ = await self._rows(pk)
            status = rows.get(STATUS)
        return status

    async def write(self, pk: str, upserts: dict[str, dict], deletes: Iterable[str] = ()) -> None:
        async with self._partition_lock(pk):
            current, old_spills = await self._rows(pk)
            rows = dict(current)
            rows.update(json.loads(json.dumps(upserts)))
            for rk in deletes:
                rows.pop(rk, None)
            with self._uncached_unless_done(pk):
                await self._save(pk, rows, old_spills)

    @contextlib.contextmanager
    def _uncached_unless_done(self, pk: str) -> Iterator[None]:
        """A write that fails or is cut off may have landed all the same: the next read asks the table."""
        try:
            yield
        except BaseException:
            self._cache.pop(pk, None)
            raise

    async def _save(self, pk: str, rows: dict[str, dict], old_spills: list[str]) -> None:
        """Spills first, under new names, then the main entity that names them: its one upsert switches readers
        from the old state to the new at once, with no transaction (whose 4 MiB would bound an instance)."""
        from azure.data.tables import UpdateMode

        main, *spills = self._entities(pk, rows)
        if spills:
            await gather_limited([self._table.upsert_entity(e, mode=UpdateMode.REPLACE) for e in spills], 4)
        await self._table.upsert_entity(main, mode=UpdateMode.REPLACE)
        keys = [e["RowKey"] for e in spills]
        self._remember(pk, rows, keys)
        for rk in old_spills:  # the last state's spills, no longer named
            await self._delete_quietly(pk, rk)

    async def _delete_quietly(self, pk: str, rk: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            await self._table.delete_entity(_escape_key(pk), rk)
        except ResourceNotFoundError:
            pass

    async def create(self, pk: str, rows: dict[str, dict]) -> bool:
        async with self._partition_lock(pk):
            with self._uncached_unless_done(pk):
                return await self._create(pk, rows)

    async def _create(self, pk: str, rows: dict[str, dict]) -> bool:
        from azure.core.exceptions import ResourceExistsError

        if pk in self._cache and self._cache[pk][0]:
            return False
        entities = self._entities(pk, rows)
        if len(entities) > 1:  # too large for the one-entity fast path: check, then save
            if await self._fetch(pk) is not None:
                return False
            await self._save(pk, json.loads(json.dumps(rows)), [])
            return True
        try:
            await self._table.create_entity(entities[0], response_preference=NO_ECHO)
        except ResourceExistsError:
            return False
        self._remember(pk, json.loads(json.dumps(rows)), [])
        return True

    async def status_rows(self) -> list[dict]:
        query = self._table.query_entities("RowKey eq ''",
                                           select=["PartitionKey", "mn"] + [f"m{i}" for i in range(40)])
        rows = []
        async for entity in query:
            status = await self._status_of(_unescape_key(entity["PartitionKey"]), _joined(entity, "m"))
            if status is not None:
                rows.append(status)
        return rows

    async def pending_partitions(self) -> set[str]:
        query = self._table.query_entities("RowKey eq '' and Pending eq true", select=["PartitionKey"])
        return {_unescape_key(e["PartitionKey"]) async for e in query}

    async def delete_partition(self, pk: str) -> None:
        async with self._partition_lock(pk):
            _, spills = await self._rows(pk)
            try:
                await self._delete_quietly(pk, _MAIN)  # first: a partition cut off midway is gone, not half there
                for rk in spills:
                    await self._delete_quietly(pk, rk)
                # spills of a write cut off before its main entity named them
                left = self._table.query_entities("PartitionKey eq @pk", parameters={"pk": _escape_key(pk)},
                                                  select=["RowKey"])
                async for entity in left:
                    if (_escape_key(pk), entity["RowKey"]) != _LEASE_KEY:
                        await self._delete_quietly(pk, entity["RowKey"])
            finally:
                self._cache.pop(pk, None)


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
