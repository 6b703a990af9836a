"""The Durable task hub engine: runs orchestrator episodes, activities, entities and timers over a Store.

One process owns the hub. Each instance's state changes under its own lock and commits as one write
to its partition; messages to other instances leave through an outbox written in that same commit,
so a `kill -9` at any point loses nothing: a restart re-runs whatever was not committed, and
receivers drop what they have already seen. Activities are therefore at-least-once, as in Azure.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import itertools
import json
import logging
import time
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, AsyncIterator, Callable, Iterable, Iterator

from .app_index import AppIndex
from .events import COMPLETION_KEYS, EventType, event, iso, parse_iso, utcnow
from .store import LEASE_SECONDS, STATUS, HubLost, Store

log = logging.getLogger("devhost")

TERMINAL = {"Completed", "Failed", "Terminated", "Canceled"}
ACTIVE = {"Pending", "Running", "Suspended", "ContinuedAsNew"}
HTTP_ACTIVITY = "BuiltIn::HttpActivity"
_OUT_OF_PROC = "\n\n$OutOfProcData$:"
STORAGE_SETTLE_SECONDS = 10.0  # how long a cancelled caller still waits for its storage call to end


class HubError(Exception):
    """A management call the hub refuses; `status` is the HTTP code the extension would answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


_counter = itertools.count()


def _row_key(prefix: str) -> str:
    """Row keys sort in arrival order within this process and stay unique across restarts."""
    return f"{prefix}{time.time_ns():020d}{next(_counter) % 1_000_000:06d}{uuid.uuid4().hex[:8]}"


def _flatten(actions: list) -> Iterator[dict]:
    for action in actions:
        if isinstance(action, list):
            yield from _flatten(action)
        elif action.get("compoundActions") is not None:
            yield from _flatten(action["compoundActions"])
        else:
            yield action


def entity_instance_id(name: str, key: str) -> str:
    return f"@{name.lower()}@{key}"


@dataclass
class Instance:
    """An orchestration or entity with its partition's rows, as loaded into memory."""

    pk: str
    meta: dict
    history: list[dict] = field(default_factory=list)
    inbox: dict[str, dict] = field(default_factory=dict)
    work: dict[str, dict] = field(default_factory=dict)
    outbox: dict[str, dict] = field(default_factory=dict)
    # Activity results held in memory (inbox row key -> the finished work row's key): the next write of the
    # partition stores or consumes them and drops the work rows; until then a restart simply reruns the work.
    unsaved: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_rows(cls, pk: str, rows: dict[str, dict]) -> "Instance | None":
        meta = rows.get(STATUS)
        if meta is None and not any(rk[0] in "mw" for rk in rows):
            return None
        inst = cls(pk, meta or {})
        length = (meta or {}).get("history_len", 0)
        inst.history = [rows[f"h{i:07d}"] for i in range(length)]
        for rk, row in rows.items():
            {"m": inst.inbox, "w": inst.work, "o": inst.outbox}.get(rk[0], {}).__setitem__(rk, row)
        return inst

    @property
    def status(self) -> str | None:
        return self.meta.get("status")

    def visible(self, now: datetime) -> list[tuple[str, dict]]:
        return sorted((rk, m) for rk, m in self.inbox.items()
                      if not m.get("visible_at") or parse_iso(m["visible_at"]) <= now)

    def next_due(self, now: datetime) -> datetime | None:
        """When the earliest message not yet visible becomes visible (those visible already are not waited for)."""
        times = [due for m in self.inbox.values() if m.get("visible_at") and (due := parse_iso(m["visible_at"])) > now]
        return min(times) if times else None


@dataclass
class Episode:
    """What one orchestrator episode adds to the partition."""

    upserts: dict[str, dict] = field(default_factory=dict)
    deletes: list[str] = field(default_factory=list)
    new_work: list[str] = field(default_factory=list)
    new_outbox: list[str] = field(default_factory=list)
    create: bool = False  # the instance's first write: insert it, and fail with IdTaken when the id exists


class _PartitionLock:
    """An instance's lock, kept only while someone holds or waits for it: the table of locks does not grow with
    every id ever asked about. On release, a finished orchestration nobody waits for leaves memory."""

    __slots__ = ("_engine", "_pk", "_lock", "_users")

    def __init__(self, engine: "Engine", pk: str) -> None:
        self._engine, self._pk, self._lock, self._users = engine, pk, asyncio.Lock(), 0

    def locked(self) -> bool:
        return self._lock.locked()

    async def __aenter__(self) -> None:
        self._users += 1
        try:
            await self._lock.acquire()
        except BaseException:
            self._release_user()
            raise

    async def __aexit__(self, *exc: Any) -> None:
        self._lock.release()
        self._release_user()

    def _release_user(self) -> None:
        self._users -= 1
        if self._users == 0:
            self._engine._locks.pop(self._pk, None)
            self._engine._evict_if_finished(self._pk)


class StorageUnreachable(Exception):
    """The task hub's storage cannot be reached at start."""


class IdTaken(Exception):
    """An instance with this id is already in storage."""


class Engine:
    def __init__(self, index: AppIndex, store: Store, *, hub: str = "TestHubName",
                 max_activities: int = 10, max_episodes: int = 8, hub_wait: float = 2 * LEASE_SECONDS) -> None:
        self.index = index
        self.store = store
        self.hub = hub
        self._instances: dict[str, Instance] = {}
        self._locks: dict[str, _PartitionLock] = {}
        self._ready: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._timers: list[tuple[float, int, str]] = []
        self._timer_due: dict[str, float] = {}  # each instance's earliest wake-up: one heap entry, not one per commit
        self._timer_wakeup = asyncio.Event()
        self._activity_slots = asyncio.Semaphore(max_activities)
        self._pool = ThreadPoolExecutor(max_workers=max_activities, thread_name_prefix="activity")
        self._max_episodes = max_episodes
        self._hub_wait = hub_wait
        self.client_binding: Callable[[], str] | None = None  # set by the host once its management API exists
        self._background: set[asyncio.Task] = set()
        self._running: set[tuple[str, str]] = set()
        # Instances dropped from memory after a failed write: reloaded from storage and resumed, keeping the
        # results of activities that had finished (work row key -> result message), and retried ever later.
        self._stale: dict[str, dict[str, dict]] = {}
        self._failures: dict[str, int] = {}
        self._draining = False
        self._episodes_running = 0
        self.hub_lost = asyncio.Event()  # another host took the task hub: this one must stop writing and exit
        self._unsettled: dict[str, asyncio.Future] = {}  # storage calls left running by a cancelled caller

    # ---------------------------------------------------------------- lifecycle

    async def start(self, storage_wait: float = 30.0) -> None:
        deadline = time.monotonic() + storage_wait
        while True:  # Azurite may still be starting next to us
            try:
                await self.store.open()
                break
            except Exception as exc:  # noqa: BLE001
                if time.monotonic() > deadline:
                    with contextlib.suppress(Exception):
                        await self.store.close()  # its connections, so that the exit prints nothing more
                    raise StorageUnreachable(f"AzureWebJobsStorage: the task hub's storage did not answer within "
                                             f"{storage_wait:.0f} s ({type(exc).__name__}); is Azurite running?"
                                             ) from exc
                await asyncio.sleep(0.2)
        await self.store.claim(wait=self._hub_wait)
        self._spawn(self._keep_lease())
        for _ in range(self._max_episodes):
            self._spawn(self._episode_worker())
        self._spawn(self._timer_loop())
        for pk in await self.store.pending_partitions():
            try:
                async with self._lock(pk):
                    inst = await self._load(pk)
            except Exception:  # noqa: BLE001 - one unreadable instance must not keep the hub from starting
                log.exception("devhost could not load %s from its task hub; trying again soon", pk)
                self._forget_once(pk)
                continue
            if inst is not None:
                self._resume(inst)

    async def drain(self, grace: float) -> bool:
        """The start of a clean stop: no activity starts any more (its work row waits for the next start), those
        running get up to `grace` seconds to finish, and every result is stored, by its episode or, when none
        takes it (a suspended instance), as it is. A stop after a drain then reruns nothing on the next start: no
        model call paid twice, no message sent again. True when all finished in time."""
        self._draining = True
        if self.hub_lost.is_set():  # another host owns the hub and its work now
            return False
        deadline = time.monotonic() + grace
        finished = True
        while self._running or self._episodes_running or not self._ready.empty():
            if time.monotonic() >= deadline:
                log.warning("devhost stops with %d activities still running: they run again on the next start",
                            len(self._running))
                finished = False
                break
            await asyncio.sleep(0.01)
        holding = [pk for pk, inst in self._instances.items() if any(inst.unsaved.values())]
        holding += [pk for pk, results in self._stale.items() if results]  # dropped after a failed write
        for pk in holding:
            async with self._lock(pk):
                try:
                    inst = await self._load(pk)  # a dropped one is reloaded with the results it had
                    if inst is not None and any(inst.unsaved.values()):
                        await self._store_held(inst)
                except Exception:  # noqa: BLE001 - storage gone: the activities run again on the next start
                    log.warning("devhost could not store the activity results it holds for %s", pk)
        return finished

    async def stop(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._pool.shutdown(wait=False, cancel_futures=True)
        try:
            await self.store.release()
        except Exception:  # noqa: BLE001 - storage already gone (Ctrl-C stops Azurite too): the lease lapses
            log.info("devhost could not hand back its task hub lease; it lapses in %.0f s", LEASE_SECONDS)
        await self.store.close()

    async def _keep_lease(self) -> None:
        while True:
            await asyncio.sleep(LEASE_SECONDS / 3)
            try:
                await self.store.renew()
            except HubLost as exc:  # another host now writes the hub: writing on would corrupt it
                log.critical("%s", exc)
                self.hub_lost.set()
                for task in list(self._background):
                    if task is not asyncio.current_task():
                        task.cancel()
                return
            except Exception:  # noqa: BLE001 - storage hiccup: the lease has time left, try again soon
                log.warning("devhost could not renew its task hub lease", exc_info=True)

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def _lock(self, pk: str) -> _PartitionLock:
        lock = self._locks.get(pk)
        if lock is None:
            lock = self._locks[pk] = _PartitionLock(self, pk)
        return lock

    def _evict_if_finished(self, pk: str) -> None:
        """A finished orchestration loaded again (a late result, a status with history, a refused event) is
        served from storage afterwards, unless it still holds something to write or to send."""
        inst = self._instances.get(pk)
        if (inst is not None and inst.meta.get("kind") == "orchestration" and inst.status in TERMINAL
                and not inst.inbox and not inst.outbox and not inst.unsaved):
            del self._instances[pk]

    async def _load(self, pk: str) -> Instance | None:
        inst = self._instances.get(pk)
        if inst is None:
            await self._settled(pk)
            try:
                rows = await self.store.read_partition(pk)
            except Exception:
                if pk in self._stale:  # still unreachable: try again later
                    self._forget(pk)
                raise
            inst = Instance.from_rows(pk, rows)
            if inst is None:
                self._failures.pop(pk, None)
            else:
                self._instances[pk] = inst
                if pk in self._stale:  # its retry is due: the caller runs it, or the timer set by _forget does
                    self._resume(inst, finished=self._stale[pk], wake=False)
            self._stale.pop(pk, None)
        return inst

    async def _write(self, pk: str, upserts: dict[str, dict], deletes: Iterable[str] = ()) -> None:
        """Writes an instance's partition (`_stored`: a write that fails or is cut off drops what memory holds)."""
        await self._stored(pk, self.store.write(pk, upserts, deletes))
        self._failures.pop(pk, None)

    async def _stored(self, pk: str, storage_call: Any) -> Any:
        """`_to_the_end`; when the call fails or its caller is cancelled, the instance is dropped from memory and
        reloaded from what storage holds (perhaps the write after all), its work and messages resumed."""
        try:
            return await self._to_the_end(pk, storage_call)
        except BaseException:
            self._forget(pk)
            raise

    async def _to_the_end(self, pk: str, storage_call: Any) -> Any:
        """Runs a storage call on a partition to its end even when the caller is cancelled meanwhile, so that what
        is reloaded afterwards is what storage holds, not what it held before a write still on its way: a caller
        waits for it a while, and whatever comes next for the partition waits for it to end. A lost hub refuses
        every call: another host writes it now."""
        if self.hub_lost.is_set():
            storage_call.close()
            raise HubLost(f"task hub {self.hub} is held by another host; this one no longer writes it")
        await self._settled(pk)
        task = asyncio.ensure_future(storage_call)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                self._unsettled[pk] = task
                task.add_done_callback(lambda done: self._unsettled.pop(pk, None)
                                       if self._unsettled.get(pk) is done else None)
                await asyncio.wait({task}, timeout=STORAGE_SETTLE_SECONDS)
            raise

    async def _settled(self, pk: str) -> None:
        """Waits for a storage call on the partition that a cancelled caller left running."""
        task = self._unsettled.get(pk)
        if task is not None:
            await asyncio.wait({task})

    def _forget(self, pk: str) -> None:
        inst = self._instances.pop(pk, None)
        finished = self._stale.setdefault(pk, {})
        if inst is not None:
            finished.update({work_rk: inst.inbox[msg_rk] for msg_rk, work_rk in inst.unsaved.items()
                             if work_rk and msg_rk in inst.inbox})
        failures = self._failures[pk] = self._failures.get(pk, 0) + 1
        delay = min(2.0 ** (failures - 1), 60.0)  # a write that keeps failing is not retried in a tight loop
        self._wake_at(pk, time.time() + delay)  # reloaded by its next episode

    def _forget_once(self, pk: str) -> None:
        """`_forget`, unless a failed write has already dropped the instance and set its retry."""
        if pk not in self._stale:
            self._forget(pk)

    def _placed(self, inst: Instance) -> None:
        """A new instance replaces whatever this process knew of the id."""
        self._instances[inst.pk] = inst
        self._stale.pop(inst.pk, None)

    def _resume(self, inst: Instance, finished: dict[str, dict] | None = None, wake: bool = True) -> None:
        """After a restart (or a reload): rerun unfinished activities, resend the outbox, wake the inbox.

        `finished`: results this process already has for some of the work (work row key -> result message)."""
        for rk, message in (finished or {}).items():
            if inst.work.pop(rk, None) is not None:
                msg_rk = _row_key("m")
                inst.inbox[msg_rk] = message
                inst.unsaved[msg_rk] = rk
        for rk, work in inst.work.items():
            self._start_work(inst.pk, rk, work)
        if inst.outbox:
            self._spawn(self._flush_outbox(inst, list(inst.outbox)))
        if wake:
            self._wake(inst)
        else:
            self._wake_later(inst)

    def _wake(self, inst: Instance) -> None:
        if inst.inbox:
            self.schedule(inst.pk)
        self._wake_later(inst)

    def _wake_later(self, inst: Instance) -> None:
        due = inst.next_due(utcnow())
        if due is not None:
            self._wake_at(inst.pk, due.timestamp())

    def _wake_at(self, pk: str, when: float) -> None:
        """Sets an instance's next episode at `when`, unless one is set already by then: the episode that runs
        sets the next one from what it still waits for."""
        due = self._timer_due.get(pk)
        if due is not None and due <= when:
            return
        self._timer_due[pk] = when
        heapq.heappush(self._timers, (when, next(_counter), pk))
        self._timer_wakeup.set()

    def schedule(self, pk: str) -> None:
        if pk not in self._queued:
            self._queued.add(pk)
            self._ready.put_nowait(pk)

    async def _timer_loop(self) -> None:
        while True:
            self._timer_wakeup.clear()
            now = time.time()
            while self._timers and self._timers[0][0] <= now:
                when, _, pk = heapq.heappop(self._timers)
                if self._timer_due.get(pk) == when:  # else an earlier wake-up replaced this one
                    del self._timer_due[pk]
                    self.schedule(pk)
            delay = (self._timers[0][0] - now) if self._timers else 3600
            # asyncio.wait, not wait_for: on Python 3.11 wait_for can swallow a cancel that arrives as the
            # event is set, and then stop() would wait for this loop forever.
            waiter = asyncio.ensure_future(self._timer_wakeup.wait())
            try:
                await asyncio.wait({waiter}, timeout=max(delay, 0.001))
            finally:
                waiter.cancel()

    async def _episode_worker(self) -> None:
        while True:
            pk = await self._ready.get()
            self._queued.discard(pk)
            self._episodes_running += 1
            try:
                async with self._lock(pk):
                    inst = await self._load(pk)
                    if inst is None:
                        continue
                    if inst.meta.get("kind") == "entity" or pk.startswith("@"):
                        await self._entity_episode(inst)
                    else:
                        await self._orchestration_episode(inst)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - one broken instance must not stop the hub
                log.exception("episode for %s failed; retrying soon from its stored state", pk)
                self._forget_once(pk)
            finally:
                self._episodes_running -= 1

    # ---------------------------------------------------------------- deliveries

    async def deliver(self, pk: str, message: dict, meta: dict | None = None) -> None:
        """Put a message in an instance's inbox (creating the instance row when `meta` is given)."""
        async with self._lock(pk):
            inst = await self._load(pk)
            if inst is None:
                inst = self._instances[pk] = Instance(pk, {})
            if self._is_duplicate(inst, message):
                return
            rk = _row_key("m")
            upserts, stale = {rk: message}, []
            if meta is not None:  # a (re)started sub-orchestration replaces whatever had its id
                upserts[STATUS] = meta
                stale = self._all_row_keys(inst) if inst.meta else []
            await self._write(pk, upserts, stale)
            if meta is not None:
                inst = Instance(pk, meta)
                self._placed(inst)
            inst.inbox[rk] = message
            self._wake(inst)

    @staticmethod
    def _is_duplicate(inst: Instance, message: dict) -> bool:
        if message.get("kind") == "start" and inst.meta.get("execution_id") == message["execution_id"]:
            return True  # a resent sub-orchestration start: the child already runs
        dedup = message.get("dedup")
        if not dedup:
            return False
        return any(m.get("dedup") == dedup for m in inst.inbox.values()) or dedup in inst.meta.get("seen", [])

    async def _flush_outbox(self, inst: Instance, keys: list[str]) -> None:
        """Delivers outbox items until storage takes them (receivers drop what they already have)."""
        delay = 0.5
        while True:
            try:
                for rk in keys:
                    item = inst.outbox.get(rk)
                    if item is not None:
                        await self.deliver(item["to"], item["message"], item.get("meta"))
                async with self._lock(inst.pk):  # not beside an episode's commit of the same partition
                    held = self._instances.get(inst.pk, inst)  # reloaded meanwhile after a failed write?
                    sent = [rk for rk in keys if rk in held.outbox]
                    if sent:
                        await self._write(inst.pk, {}, sent)
                    for rk in keys:
                        held.outbox.pop(rk, None)
                break
            except Exception:  # noqa: BLE001 - storage unreachable: the items stay in the outbox; try again
                log.warning("devhost could not deliver the outbox of %s; retrying in %.1f s", inst.pk, delay,
                            exc_info=True)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        for rk in keys:
            inst.outbox.pop(rk, None)

    # ---------------------------------------------------------------- client operations

    async def start_new(self, name: str, instance_id: str | None, input_text: str | None,
                        version: str | None = None) -> str:
        if name not in self.index.orchestrators:
            raise HubError(400, f"The function '{name}' doesn't exist, is disabled, or is not an "
                                f"orchestrator function. Additional info: the following are the known "
                                f"orchestrator functions: {', '.join(sorted(self.index.orchestrators))}")
        instance_id = instance_id or uuid.uuid4().hex
        if instance_id.startswith("@") or not instance_id.strip():
            raise HubError(400, "Instance IDs must not be empty or start with '@'.")
        async with self._lock(instance_id):
            meta = self._new_meta(instance_id, name, input_text, version, parent=None)
            message = self._start_message(meta)
            rk = _row_key("m")
            # A new id (the usual case) costs one round trip: the first episode runs now and its outcome is
            # inserted; only when the id exists is the instance read.
            if instance_id not in self._instances and await self._start_at_once(
                    Instance(instance_id, meta, inbox={rk: message})):
                return instance_id
            meta = self._new_meta(instance_id, name, input_text, version, parent=None)
            message = self._start_message(meta)
            inst = await self._load(instance_id)
            if inst is not None and inst.status in ACTIVE:
                raise HubError(409, f"An instance with ID '{instance_id}' already exists.")
            stale = [] if inst is None else self._all_row_keys(inst)
            await self._write(instance_id, {STATUS: meta, rk: message}, stale)
            self._placed(Instance(instance_id, meta, inbox={rk: message}))
        self.schedule(instance_id)
        return instance_id

    async def _start_at_once(self, inst: Instance) -> bool:
        """Runs a new instance's first episode and inserts the result; False (nothing kept) when the id exists."""
        self._instances[inst.pk] = inst  # known as new only once inserted: until then, what is kept of the id stays
        try:
            await self._orchestration_episode(inst, create=True)
            self._stale.pop(inst.pk, None)
        except IdTaken:
            self._instances.pop(inst.pk, None)
            return False
        except BaseException:  # e.g. storage down: the client learns that starting failed
            self._instances.pop(inst.pk, None)
            raise
        return True

    @staticmethod
    def _all_row_keys(inst: Instance) -> list[str]:
        return ([f"h{i:07d}" for i in range(inst.meta.get("history_len", 0))]
                + list(inst.inbox) + list(inst.work) + list(inst.outbox) + [rk for rk in inst.unsaved.values() if rk])

    @staticmethod
    def _settle(inst: Instance, upserts: dict[str, dict], deletes: list[str]) -> None:
        """Adds the in-memory activity results to a write of the partition: kept ones stored, their work rows gone."""
        for msg_rk, work_rk in inst.unsaved.items():
            if work_rk:
                deletes.append(work_rk)
            if msg_rk in inst.inbox and msg_rk not in deletes:
                upserts[msg_rk] = inst.inbox[msg_rk]

    @staticmethod
    def _new_meta(instance_id: str, name: str, input_text: str | None, version: str | None,
                  parent: dict | None) -> dict:
        now = iso(utcnow())
        return {"kind": "orchestration", "id": instance_id, "name": name, "status": "Pending",
                "execution_id": uuid.uuid4().hex, "input": input_text, "output": None, "custom_status": None,
                "created": now, "updated": now, "history_len": 0, "actions_seen": 0, "next_seq": 0,
                "retries": {}, "timers": {}, "parent": parent, "version": version or ""}

    @staticmethod
    def _start_message(meta: dict) -> dict:
        return {"kind": "start", "execution_id": meta["execution_id"]}

    async def raise_event(self, instance_id: str, name: str, data_text: str | None) -> None:
        """The event is read by an episode run now, and stored with its commit: one write, not two (the event,
        then the episode). When no episode writes it (the instance is suspended, or waits for its start), it is
        written alone; the caller hears of the event only once it is stored."""
        message = {"kind": "event", "event": event(EventType.EVENT_RAISED, utcnow(), Name=name, Input=data_text)}
        async with self._orchestration_locked(instance_id) as inst:
            if inst.status in TERMINAL:
                raise HubError(410, f"Instance with ID {instance_id} is gone: either completed or failed")
            rk = _row_key("m")
            inst.inbox[rk] = message
            inst.unsaved[rk] = ""  # no work row behind it
            try:
                await self._orchestration_episode(inst)
                if inst.unsaved.get(rk) == "":  # no write took it
                    await self._write(instance_id, {rk: message})
                    inst.unsaved.pop(rk, None)
            except BaseException:
                self._forget_once(instance_id)  # what is held of it may be ahead of storage: reload it
                raise

    @contextlib.asynccontextmanager
    async def _orchestration_locked(self, instance_id: str) -> AsyncIterator[Instance]:
        """The orchestration, loaded once under its lock (404 when there is none)."""
        async with self._lock(instance_id):
            yield self._orchestration(instance_id, await self._load(instance_id))

    @staticmethod
    def _orchestration(instance_id: str, inst: Instance | None) -> Instance:
        if inst is None or not inst.meta or inst.meta.get("kind") != "orchestration":
            raise HubError(404, f"No instance with ID '{instance_id}' found.")
        return inst

    async def terminate(self, instance_id: str, reason: str) -> None:
        async with self._orchestration_locked(instance_id) as inst:
            if inst.status in TERMINAL:
                raise HubError(410, f"Instance with ID {instance_id} is gone")
            await self._finish(inst, "Terminated", reason, Episode(), reason=reason)

    async def suspend(self, instance_id: str, reason: str) -> None:
        await self._set_suspended(instance_id, True)

    async def resume(self, instance_id: str, reason: str) -> None:
        await self._set_suspended(instance_id, False)

    async def _set_suspended(self, instance_id: str, suspended: bool) -> None:
        async with self._orchestration_locked(instance_id) as inst:
            if inst.status in TERMINAL:
                raise HubError(410, f"Instance with ID {instance_id} is gone")
            if suspended and inst.status != "Suspended":
                inst.meta["resume_status"] = inst.status
                inst.meta["status"] = "Suspended"
            elif not suspended and inst.status == "Suspended":
                inst.meta["status"] = inst.meta.pop("resume_status", "Running")
            inst.meta["updated"] = iso(utcnow())
            await self._write(instance_id, {STATUS: inst.meta})
        if not suspended:
            self._wake(inst)

    async def rewind(self, instance_id: str, reason: str) -> None:
        """Reruns a failed orchestration from the episode where it failed, keeping everything before it."""
        async with self._orchestration_locked(instance_id) as inst:
            if inst.status != "Failed":
                raise HubError(410, "Only failed instances can be rewound.")
            history = inst.history
            starts = [i for i, e in enumerate(history) if e["EventType"] == EventType.ORCHESTRATOR_STARTED]
            failures = [i for i, e in enumerate(history)
                        if e["EventType"] in (EventType.TASK_FAILED, EventType.SUB_ORCHESTRATION_FAILED)]
            cut = failures[-1] if failures else starts[-1]
            base = max((i + 1 for i, e in enumerate(history[:cut])
                        if e["EventType"] == EventType.ORCHESTRATOR_COMPLETED), default=0)
            if base == 0:
                raise HubError(400, "The orchestration failed before its first episode completed; start it again.")
            episode = Episode()
            kept, later = history[:base], history[base:]
            inst.meta.update(json.loads(json.dumps(kept[-1].get("_replay", {}))))
            requeue = [e for i, e in enumerate(later, start=base)
                       if (e["EventType"] in COMPLETION_KEYS or e["EventType"] == EventType.EVENT_RAISED)
                       and i != cut and not e.get("_retry")]
            settled = self._resolved_ids(kept) | {e[COMPLETION_KEYS[e["EventType"]]]
                                                  for e in requeue if e["EventType"] in COMPLETION_KEYS}
            for e in kept:
                if e["EventType"] == EventType.TASK_SCHEDULED and e["EventId"] not in settled:
                    self._add_work(inst, episode, e["EventId"], e["Name"], e.get("Input"))
                elif e["EventType"] == EventType.TIMER_CREATED and e["EventId"] not in settled:
                    self._add_timer(inst, episode, e["EventId"], parse_iso(e["FireAt"]))
            for e in requeue:
                rk = _row_key("m")
                inst.inbox[rk] = episode.upserts[rk] = {"kind": "event", "event": e,
                                                        "execution_id": inst.meta["execution_id"]}
            rk = _row_key("m")
            inst.inbox[rk] = episode.upserts[rk] = {"kind": "replay"}
            old_len = len(history)
            inst.history = kept
            inst.meta.update(status="Running", output=None, history_len=len(kept), updated=iso(utcnow()))
            episode.deletes += [f"h{i:07d}" for i in range(len(kept), old_len)]
            episode.upserts[STATUS] = inst.meta
            await self._write(instance_id, episode.upserts, episode.deletes)
            self._after_commit(inst, episode)
        self.schedule(instance_id)

    async def purge(self, instance_id: str) -> int:
        async with self._lock(instance_id):
            inst = await self._load(instance_id)
            if inst is None or inst.meta.get("kind") != "orchestration":
                return 0
            if inst.status not in TERMINAL:
                raise HubError(409, f"Instance {instance_id} is still {inst.status}; terminate it first.")
            if inst.outbox:  # its parent has not been told yet: purged now, the telling would write it back
                raise HubError(409, f"Instance {instance_id} is still delivering its outcome; try again shortly.")
            await self._to_the_end(instance_id, self.store.delete_partition(instance_id))
            self._instances.pop(instance_id, None)
        return 1

    async def get_status(self, instance_id: str, *, with_history: bool = False) -> tuple[dict, list[dict]] | None:
        held = await self._held(instance_id, with_history)
        if held is not None and held[0].get("kind") == "orchestration":
            return held
        if instance_id.startswith("@"):
            return None
        if with_history:
            async with self._lock(instance_id):
                inst = await self._load(instance_id)
            if inst is None or inst.meta.get("kind") != "orchestration":
                return None
            return inst.meta, list(inst.history)
        row = await self.store.read_row(instance_id, STATUS)
        if row is None or row.get("kind") != "orchestration":
            return None
        return row, []

    async def _held(self, pk: str, with_history: bool = False) -> tuple[dict, list[dict]] | None:
        """The status (and history) of an instance this process holds, as stored: an episode under way may have
        changed them in memory before its write, so a reader waits for the write (which, failing, drops them)."""
        if pk not in self._instances:
            return None
        async with self._lock(pk):
            inst = self._instances.get(pk)
            return None if inst is None else (dict(inst.meta), list(inst.history) if with_history else [])

    async def list_instances(self) -> list[dict]:
        rows = {r["id"]: r for r in await self.store.status_rows() if r.get("kind") == "orchestration"}
        for pk, inst in self._instances.items():
            lock = self._locks.get(pk)
            if inst.meta.get("kind") == "orchestration" and not (lock and lock.locked()):  # else: as stored
                rows[pk] = dict(inst.meta)
        return list(rows.values())

    async def signal_entity(self, name: str, key: str, operation: str, input_text: str | None) -> None:
        if name.lower() not in self.index.entities:
            raise HubError(404, f"The function '{name}' doesn't exist or is not an entity function.")
        await self._send_entity_op(entity_instance_id(name, key), operation, input_text,
                                   request_id=uuid.uuid4().hex, signal=True, parent=None)

    async def _send_entity_op(self, pk: str, operation: str, input_text: str | None, *, request_id: str,
                              signal: bool, parent: str | None, parent_execution: str | None = None) -> None:
        await self.deliver(pk, self._entity_op(operation, input_text, request_id, signal, parent, parent_execution))

    @staticmethod
    def _entity_op(operation: str, input_text: str | None, request_id: str, signal: bool,
                   parent: str | None, parent_execution: str | None = None) -> dict:
        return {"kind": "entity_op", "op": operation, "input": input_text, "id": request_id, "signal": signal,
                "parent": parent, "parent_execution": parent_execution, "dedup": request_id}

    async def read_entity(self, name: str, key: str) -> tuple[bool, Any]:
        pk = entity_instance_id(name, key)
        held = await self._held(pk)
        meta = held[0] if held is not None else await self.store.read_row(pk, STATUS)
        if not meta or not meta.get("exists"):
            return False, None
        return True, json.loads(meta["state"]) if meta.get("state") is not None else None

    # ---------------------------------------------------------------- orchestrator episodes

    async def _orchestration_episode(self, inst: Instance, *, create: bool = False) -> None:
        now = utcnow()
        visible = inst.visible(now)
        if not visible:
            self._wake_later(inst)
            return
        meta = inst.meta
        if meta.get("kind") != "orchestration" or meta.get("status") in TERMINAL:
            await self._drop_messages(inst, [rk for rk, _ in visible])
            return
        if meta["status"] == "Suspended":
            return
        episode = Episode(create=create)
        consumed: list[str] = []
        batch: list[dict] = []
        retry_events: list[dict] = []
        start_event = None
        replay = more_waiting = False
        resolved = self._resolved_ids(inst.history)
        for rk, message in sorted(visible, key=lambda kv: (kv[1]["kind"] != "start", kv[0])):
            kind = message["kind"]
            if kind == "replay":
                consumed.append(rk)
                replay = True
                continue
            if kind == "start":
                consumed.append(rk)
                if not inst.history and message["execution_id"] == meta["execution_id"]:
                    start_event = self._execution_started(inst, now)
                continue
            if not inst.history and start_event is None:
                break  # events wait for their execution to start
            ev = message["event"]
            if message.get("execution_id") and message["execution_id"] != meta["execution_id"]:
                consumed.append(rk)
                continue
            type_ = ev["EventType"]
            key = COMPLETION_KEYS.get(type_)
            if key is not None and (ev[key] in resolved or self._is_cancelled_timer(meta, ev)):
                consumed.append(rk)
                continue
            retry_relevant = self._is_retry_event(meta, ev)
            if retry_relevant and batch:
                more_waiting = True
                break  # the SDK numbers retry internals while it reads the event: deliver it alone
            consumed.append(rk)
            batch.append(ev if type_ == EventType.TIMER_FIRED else dict(ev, Timestamp=iso(now)))
            if key is not None:
                resolved.add(ev[key])
            if retry_relevant:
                retry_events = self._retry_internals(inst, ev, now, episode)
                break
        if start_event is None and not batch and not replay:
            await self._drop_messages(inst, consumed)
            self._wake_later(inst)  # the wake-up that ran this episode may have stood for a later one too
            if more_waiting:
                self.schedule(inst.pk)
            return
        if start_event is not None:
            meta["status"] = "Running"
        new_events = [event(EventType.ORCHESTRATOR_STARTED, now)] + ([start_event] if start_event else []) + batch
        history = inst.history + new_events + retry_events
        started = time.perf_counter()
        state, error = self._call_orchestrator(inst, history)
        duration = time.perf_counter() - started
        scheduled = self._apply_actions(inst, state, now, episode) if state is not None else []
        history = history + scheduled + [event(EventType.ORCHESTRATOR_COMPLETED, now, _replay=self._snapshot(meta))]
        for e in history:
            e["IsPlayed"] = True
        custom = state.get("customStatus") if state else None
        if custom is not None:
            meta["custom_status"] = custom
        old_len = len(inst.history)
        inst.history = history
        outcome = "Running"
        if error is not None:
            outcome = "Failed"
            await self._finish(inst, "Failed", f"Orchestrator function '{meta['name']}' failed: {error}",
                               episode, consumed=consumed, old_len=old_len, reason=error)
        elif state.get("isDone"):
            cont = next((a for a in _flatten(state.get("actions", [])) if a.get("actionType") == 4), None)
            if cont is not None:
                outcome = "ContinuedAsNew"
                await self._continue_as_new(inst, cont.get("input"), episode, consumed, old_len)
            else:
                outcome = "Completed"
                await self._finish(inst, "Completed", state.get("output"), episode, consumed=consumed,
                                   old_len=old_len)
        else:
            await self._commit(inst, episode, consumed, old_len)
        log.info("function=%s kind=orchestrator instance=%s duration_ms=%.1f outcome=%s",
                 meta["name"], inst.pk, duration * 1000, outcome)
        if more_waiting or inst.visible(utcnow()):
            self.schedule(inst.pk)

    @staticmethod
    def _execution_started(inst: Instance, now: datetime) -> dict:
        meta, parent = inst.meta, inst.meta.get("parent")
        return event(EventType.EXECUTION_STARTED, now, Name=meta["name"], Version=meta.get("version", ""),
                     Input=meta.get("input"),
                     OrchestrationInstance={"InstanceId": inst.pk, "ExecutionId": meta["execution_id"]},
                     ParentInstance=({"OrchestrationInstance": {"InstanceId": parent["instance_id"]},
                                      "TaskScheduleId": parent["task_id"]} if parent else None))

    @staticmethod
    def _snapshot(meta: dict) -> dict:
        """The host's own bookkeeping after an episode, kept on OrchestratorCompleted so rewind can return to it."""
        return json.loads(json.dumps({k: meta[k] for k in ("actions_seen", "next_seq", "retries", "timers")}))

    @staticmethod
    def _resolved_ids(history: list[dict]) -> set:
        return {e[COMPLETION_KEYS[e["EventType"]]] for e in history if e["EventType"] in COMPLETION_KEYS}

    @staticmethod
    def _is_cancelled_timer(meta: dict, ev: dict) -> bool:
        return ev["EventType"] == EventType.TIMER_FIRED and meta["timers"].get(str(ev["TimerId"])) == "cancelled"

    @staticmethod
    def _is_retry_event(meta: dict, ev: dict) -> bool:
        type_ = ev["EventType"]
        if type_ in (EventType.TASK_FAILED, EventType.SUB_ORCHESTRATION_FAILED):
            return str(ev["TaskScheduledId"]) in meta["retries"]
        if type_ == EventType.TIMER_FIRED:
            return str(ev["TimerId"]) in meta["retries"]
        return False

    def _retry_internals(self, inst: Instance, ev: dict, now: datetime, episode: Episode) -> list[dict]:
        """Mirror the SDK's RetryAbleTask: a timer after each failure, a new attempt after each timer."""
        meta = inst.meta
        retries = meta["retries"]
        if ev["EventType"] == EventType.TIMER_FIRED:
            retry = retries.pop(str(ev["TimerId"]))
            if retry["attempt"] >= retry["options"]["maxNumberOfAttempts"]:
                return []
            task_id = meta["next_seq"]
            meta["next_seq"] += 1
            retry["attempt"] += 1
            retries[str(task_id)] = retry
            if retry["kind"] == "activity":
                self._add_work(inst, episode, task_id, retry["name"], retry["input"])
                return [event(EventType.TASK_SCHEDULED, now, task_id, Name=retry["name"], Input=retry["input"],
                              _retry=True)]
            child_id = f"{retry['instance_id']}" if retry.get("fixed_id") else f"{inst.pk}:{task_id:04d}"
            self._add_child_start(inst, episode, task_id, retry["name"], child_id, retry["input"])
            return [event(EventType.SUB_ORCHESTRATION_CREATED, now, task_id, Name=retry["name"],
                          InstanceId=child_id, Input=retry["input"], _retry=True)]
        retry = retries.pop(str(ev["TaskScheduledId"]))
        timer_id = meta["next_seq"]
        meta["next_seq"] += 1
        last = retry["attempt"] >= retry["options"]["maxNumberOfAttempts"]
        delay = 0 if last else retry["options"].get("firstRetryIntervalInMilliseconds", 1000) / 1000
        fire_at = now + timedelta(seconds=delay)
        retries[str(timer_id)] = retry
        self._add_timer(inst, episode, timer_id, fire_at)
        return [event(EventType.TIMER_CREATED, now, timer_id, FireAt=iso(fire_at), _retry=True)]

    def _call_orchestrator(self, inst: Instance, history: list[dict]) -> tuple[dict | None, str | None]:
        info = self.index.orchestrators.get(inst.meta["name"])
        if info is None:
            return None, f"The orchestrator function '{inst.meta['name']}' does not exist in this app."
        parent = inst.meta.get("parent")
        context = {"history": history, "input": inst.meta.get("input"), "instanceId": inst.pk,
                   "isReplaying": False, "parentInstanceId": parent["instance_id"] if parent else None,
                   "upperSchemaVersion": 1, "upperSchemaVersionNew": 2}
        try:
            return json.loads(info.func(json.dumps(context))), None
        except Exception as exc:  # noqa: BLE001 - the SDK reports orchestrator failures by raising
            text = str(exc)
            if _OUT_OF_PROC in text:
                state = json.loads(text.split(_OUT_OF_PROC, 1)[1])
                return None, state.get("error") or text.split(_OUT_OF_PROC, 1)[0]
            return None, text or type(exc).__name__

    def _apply_actions(self, inst: Instance, state: dict, now: datetime, episode: Episode) -> list[dict]:
        meta = inst.meta
        flat = list(_flatten(state.get("actions", [])))
        for index, action in enumerate(flat):
            if action.get("actionType") == 5 and action.get("isCanceled"):
                timer_id = meta["timers"].get(f"a{index}")
                if timer_id is not None and meta["timers"].get(str(timer_id)) != "cancelled":
                    meta["timers"][str(timer_id)] = "cancelled"
                    for rk, message in list(inst.inbox.items()):
                        if message.get("event", {}).get("TimerId") == timer_id:
                            episode.deletes.append(rk)
                            inst.inbox.pop(rk)
        scheduled: list[dict] = []
        new_actions = flat[meta["actions_seen"]:]
        meta["actions_seen"] = len(flat)
        for offset, action in enumerate(new_actions):
            kind = action.get("actionType")
            if kind == 6:
                continue
            seq = meta["next_seq"]
            meta["next_seq"] += 1
            if kind in (0, 1):
                name, data = action["functionName"], action.get("input")
                scheduled.append(event(EventType.TASK_SCHEDULED, now, seq, Name=name, Input=data))
                self._add_work(inst, episode, seq, name, data)
                if kind == 1:
                    meta["retries"][str(seq)] = {"kind": "activity", "name": name, "input": data, "attempt": 1,
                                                 "options": action["retryOptions"]}
            elif kind in (2, 3):
                name, data = action["functionName"], action.get("input")
                child_id = action.get("instanceId") or f"{inst.pk}:{seq:04d}"
                scheduled.append(event(EventType.SUB_ORCHESTRATION_CREATED, now, seq, Name=name,
                                       InstanceId=child_id, Input=data))
                self._add_child_start(inst, episode, seq, name, child_id, data)
                if kind == 3:
                    meta["retries"][str(seq)] = {"kind": "orchestration", "name": name, "input": data,
                                                 "attempt": 1, "options": action["retryOptions"],
                                                 "instance_id": child_id, "fixed_id": bool(action.get("instanceId"))}
            elif kind == 5:
                fire_at = parse_iso(action["fireAt"])
                scheduled.append(event(EventType.TIMER_CREATED, now, seq, FireAt=iso(fire_at)))
                meta["timers"][f"a{meta['actions_seen'] - len(new_actions) + offset}"] = seq
                if not action.get("isCanceled"):
                    self._add_timer(inst, episode, seq, fire_at)
            elif kind in (7, 9):
                request_id = str(uuid.uuid4())
                signal = kind == 9
                request = {"op": action["operation"], "signal": signal, "input": action.get("input"),
                           "id": request_id, "parent": None if signal else inst.pk}
                scheduled.append(event(EventType.EVENT_SENT, now, seq, InstanceId=action["instanceId"],
                                       Name=action["operation"], Input=json.dumps(request)))
                self._add_outbox(inst, episode, action["instanceId"], self._entity_op(
                    action["operation"], action.get("input"), request_id, signal,
                    None if signal else inst.pk, meta["execution_id"]))
            elif kind == 8:
                scheduled.append(event(EventType.TASK_SCHEDULED, now, seq, Name=HTTP_ACTIVITY,
                                       Input=json.dumps(action["httpRequest"])))
                self._add_work(inst, episode, seq, HTTP_ACTIVITY, json.dumps(action["httpRequest"]))
            # ContinueAsNew (4) takes a number too; the episode handles it when the orchestrator is done.
        return scheduled

    def _add_work(self, inst: Instance, episode: Episode, task_id: int, name: str, data: str | None) -> None:
        rk = f"w{inst.meta['execution_id']}{task_id:07d}"
        work = {"task_id": task_id, "name": name, "input": data, "execution_id": inst.meta["execution_id"]}
        inst.work[rk] = work
        episode.upserts[rk] = work
        episode.new_work.append(rk)

    def _add_timer(self, inst: Instance, episode: Episode, timer_id: int, fire_at: datetime) -> None:
        rk = _row_key("m")
        message = {"kind": "event", "execution_id": inst.meta["execution_id"], "visible_at": iso(fire_at),
                   "event": event(EventType.TIMER_FIRED, fire_at, TimerId=timer_id, FireAt=iso(fire_at))}
        inst.inbox[rk] = message
        episode.upserts[rk] = message

    def _add_outbox(self, inst: Instance, episode: Episode, to: str, message: dict, meta: dict | None = None) -> None:
        rk = _row_key("o")
        item = {"to": to, "message": message, "meta": meta}
        inst.outbox[rk] = item
        episode.upserts[rk] = item
        episode.new_outbox.append(rk)

    def _add_child_start(self, inst: Instance, episode: Episode, task_id: int, name: str, child_id: str,
                         data: str | None) -> None:
        parent = {"instance_id": inst.pk, "task_id": task_id, "execution_id": inst.meta["execution_id"]}
        meta = self._new_meta(child_id, name, data, None, parent)
        meta["execution_id"] = uuid.uuid5(uuid.NAMESPACE_URL, f"{inst.meta['execution_id']}/{task_id}").hex
        message = dict(self._start_message(meta), dedup=f"start:{meta['execution_id']}")
        self._add_outbox(inst, episode, child_id, message, meta)

    async def _continue_as_new(self, inst: Instance, input_text: str | None, episode: Episode,
                               consumed: list[str], old_len: int) -> None:
        meta = inst.meta
        stale = [rk for rk, m in inst.inbox.items() if m.get("execution_id") == meta["execution_id"]]
        meta.update(execution_id=uuid.uuid4().hex, input=input_text, history_len=0, actions_seen=0,
                    next_seq=0, retries={}, timers={}, status="Running", updated=iso(utcnow()))
        self._consume(inst, episode, consumed, stale)
        inst.history = []
        for rk in [rk for rk in inst.work if rk not in episode.upserts]:
            inst.work.pop(rk)  # the old execution's activities: their rows go, and their results are dropped
            episode.deletes.append(rk)
        rk = _row_key("m")
        start = self._start_message(meta)
        inst.inbox[rk] = start
        episode.upserts[rk] = start
        episode.deletes += [f"h{i:07d}" for i in range(0, old_len)]
        await self._commit(inst, episode, consumed, 0)

    @staticmethod
    def _consume(inst: Instance, episode: Episode, consumed: list[str], keys: list[str]) -> None:
        """Adds messages to those the commit deletes; the ones this episode added are simply not written."""
        for rk in keys:
            if episode.upserts.pop(rk, None) is not None:
                inst.inbox.pop(rk, None)
            elif rk not in consumed:
                consumed.append(rk)

    async def _finish(self, inst: Instance, status: str, output: Any, episode: Episode, *,
                      consumed: list[str] | None = None, old_len: int | None = None, reason: str = "") -> None:
        meta = inst.meta
        meta.update(status=status, output=output, updated=iso(utcnow()))
        consumed = list(consumed or [])
        # Nothing more is delivered to a finished instance: its messages go with the commit, and until the commit
        # is stored, the activity results among them stay in memory (a failed write must not cost a rerun).
        self._consume(inst, episode, consumed, list(inst.inbox))
        parent = meta.get("parent")
        if parent:
            if status == "Completed":
                ev = event(EventType.SUB_ORCHESTRATION_COMPLETED, utcnow(), TaskScheduledId=parent["task_id"],
                           Result=json.dumps(output))
            else:
                ev = event(EventType.SUB_ORCHESTRATION_FAILED, utcnow(), TaskScheduledId=parent["task_id"],
                           Reason=f"Sub-orchestration '{meta['name']}' ({inst.pk}) {status.lower()}: {reason}",
                           Details=str(output))
            self._add_outbox(inst, episode, parent["instance_id"], {
                "kind": "event", "event": ev, "execution_id": parent["execution_id"],
                "dedup": f"done:{meta['execution_id']}"})
        await self._commit(inst, episode, consumed, old_len if old_len is not None else len(inst.history))

    async def _commit(self, inst: Instance, episode: Episode, consumed: list[str], old_len: int) -> None:
        meta = inst.meta
        meta["history_len"] = len(inst.history)
        meta["updated"] = iso(utcnow())
        for i in range(old_len, len(inst.history)):
            episode.upserts[f"h{i:07d}"] = inst.history[i]
        if meta["status"] in TERMINAL:
            for rk in list(inst.work):  # running activities' results are no longer wanted
                if rk not in episode.deletes:
                    episode.deletes.append(rk)
                episode.upserts.pop(rk, None)
                inst.work.pop(rk)
            episode.new_work.clear()
        episode.upserts[STATUS] = meta
        deletes = [rk for rk in dict.fromkeys(consumed + episode.deletes) if rk not in episode.upserts]
        self._settle(inst, episode.upserts, deletes)
        if episode.create:
            created = await self._stored(inst.pk, self.store.create(inst.pk, episode.upserts))
            if not created:
                raise IdTaken(inst.pk)
            self._failures.pop(inst.pk, None)
        else:
            await self._write(inst.pk, episode.upserts, [rk for rk in deletes if rk not in inst.unsaved])
        inst.unsaved.clear()
        for rk in consumed:
            inst.inbox.pop(rk, None)
        self._after_commit(inst, episode)

    def _after_commit(self, inst: Instance, episode: Episode) -> None:
        for rk in episode.new_work:
            if rk in inst.work:
                self._start_work(inst.pk, rk, inst.work[rk])
        if episode.new_outbox:
            self._spawn(self._flush_outbox(inst, list(episode.new_outbox)))
        self._wake_later(inst)
        if inst.meta.get("status") in TERMINAL and inst.meta.get("kind") == "orchestration":
            self._instances.pop(inst.pk, None)  # finished instances are served from the store

    async def _drop_messages(self, inst: Instance, keys: list[str]) -> None:
        if keys:
            await self._store_held(inst, keys)
            for rk in keys:
                inst.inbox.pop(rk, None)

    async def _store_held(self, inst: Instance, dropped: Iterable[str] = ()) -> None:
        """Writes the activity results held in memory (and deletes the messages `dropped`), reading none."""
        upserts: dict[str, dict] = {}
        deletes = list(dropped)
        self._settle(inst, upserts, deletes)
        await self._write(inst.pk, upserts, [rk for rk in deletes if rk not in inst.unsaved])
        inst.unsaved.clear()

    # ---------------------------------------------------------------- activities

    def _start_work(self, pk: str, rk: str, work: dict) -> None:
        """Runs a work item unless it already runs in this process (at-least-once, not twice at once)."""
        if (pk, rk) in self._running or self._draining or self.hub_lost.is_set():
            return
        self._running.add((pk, rk))
        task = self._spawn(self._run_work(pk, rk, work))
        task.add_done_callback(lambda _: self._running.discard((pk, rk)))

    async def _run_work(self, pk: str, rk: str, work: dict) -> None:
        async with self._activity_slots:
            if self._draining:  # stopping: the work row is stored, the next start runs it
                return
            name = work["name"]
            started = time.perf_counter()
            if name == HTTP_ACTIVITY:
                ev = await self._call_http(work)
            else:
                ev = await self._call_activity(name, work)
            duration = time.perf_counter() - started
            outcome = "Succeeded" if ev["EventType"] == EventType.TASK_COMPLETED else "Failed"
            log.info("function=%s kind=activity instance=%s task=%s duration_ms=%.1f outcome=%s",
                     name, pk, work["task_id"], duration * 1000, outcome)
        await self._complete_work(pk, rk, work, ev)

    async def _call_activity(self, name: str, work: dict) -> dict:
        from azure.functions import meta as func_meta
        from azure.functions.durable_functions import ActivityTriggerConverter

        info = self.index.activities.get(name)
        task_id = work["task_id"]
        if info is None:
            return event(EventType.TASK_FAILED, utcnow(), TaskScheduledId=task_id,
                         Reason=f"Activity function '{name}' failed: the function '{name}' doesn't exist",
                         Details="")
        try:
            value = ActivityTriggerConverter.decode(func_meta.Datum(work["input"] or "null", "string"),
                                                    trigger_metadata={})
            kwargs = {info.trigger["name"]: value}
            client = info.binding_of("durableClient")
            if client is not None and self.client_binding is not None:  # activities may start and signal, too
                kwargs[client["name"]] = self.client_binding()
            if info.is_async:
                result = await info.func(**kwargs)
            else:
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(self._pool, functools.partial(info.func, **kwargs))
            text = ActivityTriggerConverter.encode(result, expected_type=None).value
            return event(EventType.TASK_COMPLETED, utcnow(), TaskScheduledId=task_id, Result=text)
        except Exception as exc:  # noqa: BLE001 - activity failures travel to the orchestrator
            return event(EventType.TASK_FAILED, utcnow(), TaskScheduledId=task_id,
                         Reason=f"Activity function '{name}' failed: {exc}",
                         Details="".join(traceback.format_exception(exc)))

    async def _call_http(self, work: dict) -> dict:
        import aiohttp

        request = json.loads(work["input"])
        try:
            async with aiohttp.ClientSession() as session:
                async with session.request(request.get("method", "GET"), request["uri"],
                                           data=request.get("content"), headers=request.get("headers") or {},
                                           timeout=aiohttp.ClientTimeout(total=100)) as response:
                    content = await response.text()
                    result = {"statusCode": response.status, "headers": dict(response.headers), "content": content}
            return event(EventType.TASK_COMPLETED, utcnow(), TaskScheduledId=work["task_id"],
                         Result=json.dumps(result))
        except Exception as exc:  # noqa: BLE001
            return event(EventType.TASK_FAILED, utcnow(), TaskScheduledId=work["task_id"],
                         Reason=f"HTTP call to {request.get('uri')} failed: {exc}", Details="")

    async def _complete_work(self, pk: str, rk: str, work: dict, ev: dict) -> None:
        async with self._lock(pk):
            try:
                inst = await self._load(pk)
            except Exception:  # storage unreachable: keep the result for when the instance is reloaded
                self._forget_once(pk)
                self._stale[pk][rk] = {"kind": "event", "event": ev, "execution_id": work["execution_id"]}
                log.warning("devhost could not load %s to hand it an activity result; kept for later", pk)
                return
            if inst is None or rk not in inst.work:
                return
            inst.work.pop(rk)
            if inst.status in TERMINAL or inst.meta.get("execution_id") != work["execution_id"]:
                try:  # a result nobody wants: its work row goes
                    await self._write(pk, {}, [rk])
                except Exception:  # noqa: BLE001 - reloaded later, the row is run and dropped again
                    log.warning("devhost could not drop the finished work %s of %s", rk, pk)
                return
            msg_rk = _row_key("m")
            inst.inbox[msg_rk] = {"kind": "event", "event": ev, "execution_id": work["execution_id"]}
            inst.unsaved[msg_rk] = rk  # stored with the episode that reads it: one write per activity, not two
        self.schedule(pk)

    # ---------------------------------------------------------------- entities

    async def _entity_episode(self, inst: Instance) -> None:
        visible = inst.visible(utcnow())
        if not visible:
            return
        name, _, key = inst.pk[1:].partition("@")
        info = self.index.entities.get(name)
        meta = inst.meta or {}
        if not meta:
            now = iso(utcnow())
            meta = {"kind": "entity", "id": inst.pk, "name": name, "key": key, "state": None, "exists": False,
                    "created": now, "updated": now, "seen": []}
        ops = [(rk, m) for rk, m in visible if m.get("kind") == "entity_op"]
        consumed = [rk for rk, _ in visible]
        episode = Episode()
        if info is not None and ops:
            batch = {"self": {"name": name, "key": key}, "exists": bool(meta.get("exists")),
                     "state": meta.get("state"),
                     "batch": [{"name": m["op"], "input": json.dumps(m["input"] if m["input"] is not None else "null"),
                                "isSignal": m["signal"]} for _, m in ops]}
            started = time.perf_counter()
            try:
                response = json.loads(info.func(json.dumps(batch)))
                outcome = "Succeeded"
            except Exception as exc:  # noqa: BLE001 - a broken entity answers every call with the error
                response = {"entityExists": meta.get("exists"), "entityState": meta.get("state"),
                            "results": [{"isError": True, "result": json.dumps(str(exc))} for _ in ops]}
                outcome = "Failed"
            log.info("function=%s kind=entity instance=%s operations=%d duration_ms=%.1f outcome=%s",
                     name, inst.pk, len(ops), (time.perf_counter() - started) * 1000, outcome)
            meta["exists"] = bool(response.get("entityExists"))
            meta["state"] = response.get("entityState") if meta["exists"] else None
            for (_, message), result in zip(ops, response.get("results", [])):
                if message["signal"] or not message.get("parent"):
                    continue
                payload = {"result": result.get("result")}
                if result.get("isError"):
                    payload["exceptionType"] = "Exception"
                self._add_outbox(inst, episode, message["parent"], {
                    "kind": "event", "execution_id": message.get("parent_execution"),
                    "dedup": f"reply:{message['id']}",
                    "event": event(EventType.EVENT_RAISED, utcnow(), Name=message["id"], Input=json.dumps(payload))})
        meta["seen"] = (meta.get("seen", []) + [m["id"] for _, m in ops])[-200:]
        meta["updated"] = iso(utcnow())
        inst.meta = meta
        episode.upserts[STATUS] = meta
        await self._write(inst.pk, episode.upserts, consumed)
        for rk in consumed:
            inst.inbox.pop(rk, None)
        self._after_commit(inst, episode)
        if inst.inbox:
            self.schedule(inst.pk)
