"""The engine when callers, episodes and storage interleave: readers never see more than storage holds, a caller
cut off mid-write leaves nothing half applied, and what the engine keeps in memory does not grow without end."""
from __future__ import annotations

import asyncio
import json

import pytest
import sample_app
from engine_support import DownStore, engine_on, stored_status_when
from helpers import FUNCTION_KEY, MASTER_KEY, Http, eventually

import devhost.__main__ as devhost_main
from devhost import engine as engine_module
from devhost.engine import HubError
from devhost.events import EventType, event, utcnow
from devhost.host import DevHost, HostConfig, HostThread
from devhost.store import STATUS, HubLost, MemoryStore


class GatedStore(MemoryStore):
    """Holds the next write of one instance at a gate the test opens (the write lands) or breaks (it fails)."""

    def __init__(self, instance_id: str) -> None:
        super().__init__()
        self.instance_id = instance_id
        self._gate: asyncio.Future | None = None
        self.reached = asyncio.Event()

    def arm(self) -> asyncio.Future:
        self.reached = asyncio.Event()
        self._gate = asyncio.get_running_loop().create_future()
        return self._gate

    async def write(self, pk, upserts, deletes=()) -> None:
        if pk == self.instance_id and self._gate is not None:
            gate, self._gate = self._gate, None
            self.reached.set()
            await gate
        await super().write(pk, upserts, deletes)


async def _waiting(engine, store: GatedStore, instance_id: str) -> None:
    await engine.start()
    await engine.start_new("wait_with_timeout", instance_id, json.dumps(60))


def test_while_a_step_is_written_readers_see_what_storage_holds_and_a_failed_write_shows_nothing_new():
    store = GatedStore("g1")

    async def run() -> tuple[str, bool, str, dict]:
        engine = engine_on(store)
        try:
            await _waiting(engine, store, "g1")
            gate = store.arm()
            raising = asyncio.create_task(engine.raise_event("g1", "Approval", json.dumps("yes")))
            await store.reached.wait()  # the episode has run: in memory the orchestration is complete
            listed = {row["id"]: row["status"] for row in await engine.list_instances()}
            reading = asyncio.create_task(engine.get_status("g1"))
            await asyncio.sleep(0.05)
            waited = not reading.done()
            gate.set_exception(ConnectionError("storage unreachable"))
            with pytest.raises(ConnectionError):
                await raising
            meta, _ = await reading
            await engine.raise_event("g1", "Approval", json.dumps("again"))
            return listed["g1"], waited, meta["status"], await stored_status_when(store, "g1", "Completed")
        finally:
            await engine.stop()

    listed, waited, read, done = asyncio.run(run())
    assert listed == "Running"  # what storage holds, not the step being written
    assert waited and read == "Running"  # the read waited for the write, which failed
    assert done["output"] == {"approved": "again"}


@pytest.mark.parametrize("lands", [True, False], ids=["write-lands", "write-fails"])
def test_a_caller_cut_off_during_its_write_leaves_memory_as_storage_has_it(lands):
    store = GatedStore("c1")

    async def run() -> tuple[str, str, dict]:
        engine = engine_on(store)
        try:
            await _waiting(engine, store, "c1")
            gate = store.arm()
            raising = asyncio.create_task(engine.raise_event("c1", "Approval", json.dumps("yes")))
            await store.reached.wait()
            raising.cancel()  # as aiohttp does to a request under way when the server stops
            await asyncio.sleep(0.01)
            if not gate.done():
                gate.set_result(None) if lands else gate.set_exception(ConnectionError("cut off"))
            with pytest.raises(asyncio.CancelledError):
                await raising
            held = (await engine.get_status("c1"))[0]["status"]
            stored = (await store.read_row("c1", STATUS))["status"]
            if not lands:  # the client saw no answer and raises the event again
                await engine.raise_event("c1", "Approval", json.dumps("again"))
            return held, stored, await stored_status_when(store, "c1", "Completed")
        finally:
            await engine.stop()

    held, stored, done = asyncio.run(run())
    assert held == stored == ("Completed" if lands else "Running")
    assert done["output"] == {"approved": "yes" if lands else "again"}


def test_terminate_racing_the_step_that_completes_the_instance_answers_gone_or_terminates():
    store = GatedStore("t1")

    async def answer(call) -> object:
        try:
            await call
            return "done"
        except HubError as exc:
            return exc.status

    async def run() -> tuple[object, object, dict]:
        engine = engine_on(store)
        try:
            await _waiting(engine, store, "t1")
            gate = store.arm()
            noise = asyncio.create_task(engine.raise_event("t1", "Noise", "1"))  # holds the instance, writing
            await store.reached.wait()
            terminating = asyncio.create_task(answer(engine.terminate("t1", "operator")))
            approving = asyncio.create_task(answer(engine.raise_event("t1", "Approval", json.dumps("yes"))))
            await asyncio.sleep(0.01)  # both wait for the instance, the terminate first
            gate.set_result(None)
            await noise
            return await terminating, await approving, await store.read_row("t1", STATUS)
        finally:
            await engine.stop()

    terminated, approved, stored = asyncio.run(run())
    assert (terminated, approved, stored["status"]) in {("done", 410, "Terminated"), (410, "done", "Completed")}


class FailsTheFinishOnce(MemoryStore):
    """Refuses the first write that would complete an instance."""

    def __init__(self) -> None:
        super().__init__()
        self.refused = 0

    async def write(self, pk, upserts, deletes=()) -> None:
        if not self.refused and upserts.get(STATUS, {}).get("status") == "Completed":
            self.refused += 1
            raise ConnectionError("storage unreachable")
        await super().write(pk, upserts, deletes)


def test_an_activity_result_read_by_a_final_step_whose_write_failed_is_not_computed_again():
    store = FailsTheFinishOnce()
    sample_app.calls.clear()

    async def run() -> dict:
        engine = engine_on(store)
        await engine.start()
        try:
            await engine.start_new("ticker", "f1", json.dumps({"n": 2, "key": "finish"}))
            return await stored_status_when(store, "f1", "Completed")
        finally:
            await engine.stop()

    done = asyncio.run(run())
    assert store.refused == 1 and done["output"] == 2
    assert sample_app.calls["finish"] == 2  # the last tick's result was kept through the failed write


def test_what_the_engine_keeps_of_instances_ids_and_timers_does_not_grow_with_use():
    store = MemoryStore()

    async def run() -> tuple[int, int, int, int]:
        engine = engine_on(store)
        await engine.start()
        try:
            await engine.start_new("chain", "done", json.dumps(2))
            await stored_status_when(store, "done", "Completed")
            for n in range(50):  # ids nobody has
                assert await engine.get_status(f"nobody-{n}") is None
            assert (await engine.get_status("done", with_history=True))[0]["status"] == "Completed"
            with pytest.raises(HubError) as gone:
                await engine.raise_event("done", "Late", None)
            await engine.start_new("wait_with_timeout", "w", json.dumps(60))
            for n in range(20):  # each stored step of a waiting instance used to add a wake-up for its timer
                await engine.raise_event("w", "Noise", str(n))
            return gone.value.status, len(engine._locks), "done" in engine._instances, len(engine._timers)
        finally:
            await engine.stop()

    gone, locks, finished_held, timers = asyncio.run(run())
    assert gone == 410
    assert locks == 0 and not finished_held
    assert timers == 1  # the 60 s timer of "w", once


def test_an_instance_that_cannot_be_loaded_does_not_keep_the_hub_from_starting():
    store = MemoryStore()

    async def run() -> dict:
        broken = {"kind": "orchestration", "id": "broken", "name": "chain", "status": "Running", "history_len": 3}
        await store.write("broken", {STATUS: broken, "m0000001": {"kind": "replay"}})  # its history rows are gone
        engine = engine_on(store)
        await engine.start()
        try:
            await engine.start_new("chain", "fine", json.dumps(2))
            return await stored_status_when(store, "fine", "Completed")
        finally:
            await engine.stop()

    assert asyncio.run(run())["output"] == 2


class TakenStore(MemoryStore):
    """A hub another host takes over: the next renewal of the lease fails."""

    def __init__(self) -> None:
        super().__init__()
        self.taken = False

    async def renew(self) -> None:
        if self.taken:
            raise HubLost("task hub taken by another host")


def test_a_host_that_lost_its_hub_writes_nothing_more(monkeypatch):
    monkeypatch.setattr(engine_module, "LEASE_SECONDS", 0.15)
    store = TakenStore()

    async def run() -> tuple[dict, list[type]]:
        engine = engine_on(store)
        await engine.start()
        try:
            await engine.start_new("wait_with_timeout", "w", json.dumps(60))
            await engine.start_new("chain", "done", "1")
            await stored_status_when(store, "done", "Completed")
            before = await store.read_partition("w")
            store.taken = True
            await asyncio.wait_for(engine.hub_lost.wait(), 5)
            refused = []
            for call in (engine.start_new("chain", "new", "1"), engine.raise_event("w", "Approval", "1"),
                         engine.suspend("w", "x"), engine.purge("done")):
                with pytest.raises(HubLost) as exc:
                    await call
                refused.append(exc.type)
            assert await store.read_partition("w") == before and await store.read_row("new", STATUS) is None
            assert await store.read_row("done", STATUS) is not None
            return before, refused
        finally:
            await engine.stop()

    _, refused = asyncio.run(run())
    assert refused == [HubLost] * 4


def _host_on(store: MemoryStore) -> DevHost:
    return DevHost(sample_app.app, store, HostConfig(port=0, function_key=FUNCTION_KEY, master_key=MASTER_KEY))


def test_clients_of_a_host_that_lost_its_hub_get_a_503(monkeypatch):
    monkeypatch.setattr(engine_module, "LEASE_SECONDS", 0.15)
    store = TakenStore()
    store.taken = True
    with HostThread(_host_on(store)) as running:
        eventually(running.host.engine.hub_lost.is_set, what="the lost hub to be noticed")
        code, _, body = Http(running.base_url, MASTER_KEY).request(
            "POST", "/runtime/webhooks/durabletask/orchestrators/chain", 2)
    assert code == 503 and "another host" in body["Message"]


def test_devhost_stops_with_exit_status_3_when_another_host_takes_its_hub(monkeypatch):
    async def no_freeze() -> None:
        return None

    monkeypatch.setattr(engine_module, "LEASE_SECONDS", 0.15)
    monkeypatch.setattr(devhost_main, "freeze_after_imports", no_freeze)
    store = TakenStore()
    store.taken = True
    assert asyncio.run(asyncio.wait_for(devhost_main._serve(_host_on(store)), 10)) == 3


def test_a_finished_child_still_telling_its_parent_is_not_purged_until_it_has():
    store = DownStore("p1")
    store.down = False

    async def run() -> tuple[int, int, dict]:
        engine = engine_on(store)
        await engine.start()
        try:
            await engine.start_new("parent", "p1", None)
            store.down = True  # the first child's outcome cannot reach the parent
            await stored_status_when(store, "p1:0000", "Completed")
            with pytest.raises(HubError) as delivering:
                await engine.purge("p1:0000")
            store.down = False
            done = await stored_status_when(store, "p1", "Completed", timeout=15)
            return delivering.value.status, await engine.purge("p1:0000"), done
        finally:
            await engine.stop()

    refused, purged, done = asyncio.run(run())
    assert refused == 409 and purged == 1
    assert done["output"] == [2, 3]
    assert asyncio.run(store.read_partition("p1:0000")) == {}  # not written back by the delivery


def test_an_outcome_left_in_an_outbox_by_a_crash_is_delivered_after_the_restart():
    store = MemoryStore()

    async def run() -> tuple[dict, dict]:
        engine = engine_on(store)
        await engine.start()
        try:
            await engine.start_new("wait_with_timeout", "parent", json.dumps(60))
        finally:
            await engine.stop()
        told = {"kind": "event", "dedup": "done:child",
                "event": event(EventType.EVENT_RAISED, utcnow(), Name="Approval", Input=json.dumps("from the outbox"))}
        finished = {"kind": "orchestration", "id": "child", "name": "chain", "status": "Completed", "history_len": 0}
        await store.write("child", {STATUS: finished, "o0000001": {"to": "parent", "message": told, "meta": None}})
        again = engine_on(store)
        await again.start()  # the crash came between the child's commit and the delivery of its outbox
        try:
            return await stored_status_when(store, "parent", "Completed"), await store.read_partition("child")
        finally:
            await again.stop()

    done, child = asyncio.run(run())
    assert done["output"] == {"approved": "from the outbox"}
    assert list(child) == [STATUS]  # delivered, then taken out of the outbox


class SlowOnce(MemoryStore):
    """One write of one instance takes a second (storage retrying); counts writes under way at once."""

    def __init__(self, instance_id: str) -> None:
        super().__init__()
        self.instance_id = instance_id
        self.slow = False
        self.under_way = self.most_under_way = 0

    async def write(self, pk, upserts, deletes=()) -> None:
        self.under_way += 1
        self.most_under_way = max(self.most_under_way, self.under_way)
        try:
            if pk == self.instance_id and self.slow:
                self.slow = False
                await asyncio.sleep(1.0)
            await super().write(pk, upserts, deletes)
        finally:
            self.under_way -= 1


def test_a_write_that_outlasts_its_cancelled_caller_is_waited_for_by_whatever_comes_next(monkeypatch):
    monkeypatch.setattr(engine_module, "STORAGE_SETTLE_SECONDS", 0.2)
    store = SlowOnce("s1")

    async def run() -> tuple[object, dict]:
        engine = engine_on(store)
        await engine.start()
        try:
            await engine.start_new("wait_with_timeout", "s1", json.dumps(60))
            store.slow = True
            first = asyncio.create_task(engine.raise_event("s1", "Approval", json.dumps("first")))
            await asyncio.sleep(0.1)
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
            try:  # the client, having no answer, raises the event again
                await engine.raise_event("s1", "Approval", json.dumps("second"))
                again = "done"
            except HubError as exc:
                again = exc.status
            return again, await stored_status_when(store, "s1", "Completed")
        finally:
            await engine.stop()

    again, done = asyncio.run(run())
    assert store.most_under_way == 1  # never two writers of the partition
    assert (again, done["output"]) == (410, {"approved": "first"})  # the retry found the first event applied


class Hiccups(GatedStore):
    """Holds the writes of one instance at a gate, and refuses the next write of another."""

    def __init__(self, gated: str) -> None:
        super().__init__(gated)
        self.refuse: str | None = None

    async def write(self, pk, upserts, deletes=()) -> None:
        if pk == self.refuse:
            self.refuse = None
            raise ConnectionError("storage hiccup")
        await super().write(pk, upserts, deletes)


def test_a_timer_fires_when_the_wake_up_that_stood_for_it_found_its_instance_already_queued():
    store = Hiccups("busy")

    async def run() -> dict:
        engine = engine_on(store, episodes=1)
        await engine.start()
        try:
            await engine.start_new("durable_timer", "a", json.dumps(1.5))
            await engine.start_new("wait_with_timeout", "busy", json.dumps(60))
            store.refuse = "a"
            with pytest.raises(ConnectionError):  # a's retry wake-up, in 1 s, now stands for its timer too
                await engine.raise_event("a", "Noise", "1")
            await engine.deliver("busy", {"kind": "event", "event": event(EventType.EVENT_RAISED, utcnow(),
                                                                           Name="x", Input="1")})
            gate = store.arm()
            await store.reached.wait()  # the only episode worker is stuck writing "busy"
            await engine.deliver("a", {"kind": "event", "execution_id": "an-earlier-execution",
                                       "event": event(EventType.EVENT_RAISED, utcnow(), Name="late", Input="1")})
            await asyncio.sleep(1.2)  # the retry wake-up comes and goes while a waits in the queue
            gate.set_result(None)
            # a's episode only drops the late message: it must set its timer's wake-up again
            return await stored_status_when(store, "a", "Completed", timeout=5)
        finally:
            await engine.stop()

    assert asyncio.run(run())["output"] >= 1.5
