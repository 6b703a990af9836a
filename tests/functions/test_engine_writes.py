"""What the engine writes to its store: one write per orchestration step, and nothing lost by a crash between."""
from __future__ import annotations

import asyncio
import json

import sample_app
from engine_support import DownStore, engine_on, stored_status_when

from devhost.events import EventType
from devhost.store import STATUS, MemoryStore


class CountingStore(MemoryStore):
    """Counts round trips a table store would make: a create is one (MemoryStore's create writes inside)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []
        self._creating = False

    async def write(self, pk, upserts, deletes=()) -> None:
        if not self._creating:
            self.writes.append(pk)
        await super().write(pk, upserts, deletes)

    async def create(self, pk, rows) -> bool:
        self.writes.append(pk)
        self._creating = True
        try:
            return await super().create(pk, rows)
        finally:
            self._creating = False


def test_a_chain_of_activities_costs_one_write_to_start_and_one_per_activity():
    store = CountingStore()

    async def run() -> dict:
        engine = engine_on(store)
        await engine.start()
        try:
            await engine.start_new("chain", "c1", json.dumps(5))
            return await stored_status_when(store, "c1", "Completed")
        finally:
            await engine.stop()

    done = asyncio.run(run())
    assert done["output"] == 5
    # The insert carries the first episode (activity 1 scheduled); each result is stored by the episode reading it.
    assert store.writes.count("c1") == 1 + 5


def test_an_activity_result_not_yet_stored_is_recomputed_after_a_crash():
    store = MemoryStore()
    sample_app.calls.clear()

    async def crash_before_the_result_is_stored() -> None:
        engine = engine_on(store, episodes=0)  # no episode ever runs: results stay in memory only
        await engine.start()
        await engine.start_new("retrying", "r1", json.dumps({"activity": "fails_twice", "attempts": 1,
                                                               "key": "crash"}))

        async def ran_once() -> None:
            while sample_app.calls.get("crash", 0) < 1:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(ran_once(), 10)
        await asyncio.sleep(0.05)
        await engine.stop()  # the process is gone; what it held in memory with it

    async def restart() -> dict:
        engine = engine_on(store)
        await engine.start()
        try:
            return await stored_status_when(store, "r1", "Failed")
        finally:
            await engine.stop()

    asyncio.run(crash_before_the_result_is_stored())
    rows = asyncio.run(store.read_partition("r1"))
    assert [rk for rk in rows if rk.startswith("w")], "the work row stays until its result is stored"
    assert not [rk for rk in rows if rk.startswith("m")], "the result was not stored"
    asyncio.run(restart())
    assert sample_app.calls["crash"] == 2  # run again after the restart (at-least-once, as in Azure)


class FlakyStore(MemoryStore):
    """Storage that refuses the first write of every step of one instance, as during a storage outage."""

    def __init__(self, instance_id: str) -> None:
        super().__init__()
        self.instance_id = instance_id
        self.refused = 0
        self._fail_next = True

    async def write(self, pk, upserts, deletes=()) -> None:
        if pk == self.instance_id and self._fail_next:
            self._fail_next = False
            self.refused += 1
            raise ConnectionError("storage unreachable")
        self._fail_next = True
        await super().write(pk, upserts, deletes)


def test_an_episode_whose_write_failed_runs_again_from_what_is_stored():
    store = FlakyStore("f1")

    async def run() -> dict:
        engine = engine_on(store)
        await engine.start()
        try:
            try:
                await engine.start_new("chain", "f1", json.dumps(3))
            except ConnectionError:  # the client learns that starting failed, and tries again
                await engine.start_new("chain", "f1", json.dumps(3))
            await stored_status_when(store, "f1", "Completed", timeout=30)
            meta, history = await engine.get_status("f1", with_history=True)
            return {"meta": meta, "history": history}
        finally:
            await engine.stop()

    done = asyncio.run(run())
    assert store.refused >= 3  # every step's commit failed once
    assert done["meta"]["output"] == 3
    kinds = [e["EventType"] for e in done["history"]]
    assert kinds.count(4) == 3 and kinds.count(5) == 3  # three activities scheduled and completed, once each


def _through_an_outage(store: DownStore, key: str, seconds: float) -> tuple[dict, int]:
    """A two-step ticker started with storage up, which then refuses the instance for `seconds`: its final status,
    and how many writes were refused meanwhile."""
    async def run() -> tuple[dict, int]:
        engine = engine_on(store)
        await engine.start()
        try:
            store.down = False
            await engine.start_new("ticker", store.instance_id, json.dumps({"n": 2, "key": key}))
            store.down = True  # the first activity's result cannot be stored
            await asyncio.sleep(seconds)
            refused_while_down = store.refused
            store.down = False
            return await stored_status_when(store, store.instance_id, "Completed", timeout=15), refused_while_down
        finally:
            await engine.stop()

    return asyncio.run(run())


def test_while_writes_fail_finished_activities_are_not_run_again_and_retries_slow_down():
    sample_app.calls.clear()
    done, refused = _through_an_outage(DownStore("t1"), "down", 4)
    assert done["output"] == 2
    assert sample_app.calls["down"] == 2  # the first activity's result was kept in memory, not recomputed
    assert 2 <= refused <= 4  # retried after 1 s, 2 s... not every second


def test_starting_an_id_held_back_after_a_failed_write_answers_409_and_the_instance_still_finishes():
    from devhost.engine import HubError

    store = DownStore("s1")
    sample_app.calls.clear()

    async def run() -> tuple[int, dict]:
        engine = engine_on(store)
        await engine.start()
        try:
            store.down = False
            await engine.start_new("ticker", "s1", json.dumps({"n": 2, "key": "again"}))
            store.down = True
            while "s1" not in engine._stale:  # a write failed: the instance waits to be reloaded
                await asyncio.sleep(0.01)
            store.down = False
            try:
                await engine.start_new("ticker", "s1", json.dumps({"n": 2, "key": "again"}))
                refused = 0
            except HubError as exc:
                refused = exc.status
            return refused, await stored_status_when(store, "s1", "Completed", timeout=10)
        finally:
            await engine.stop()

    refused, done = asyncio.run(run())
    assert refused == 409 and done["output"] == 2


class DownReadStore(DownStore):
    """Refuses reads of the instance too."""

    async def read_partition(self, pk):
        if pk == self.instance_id and self.down:
            raise ConnectionError("storage unreachable")
        return await super().read_partition(pk)


def test_an_instance_whose_reload_fails_is_tried_again_until_storage_answers():
    sample_app.calls.clear()
    done, _ = _through_an_outage(DownReadStore("r2"), "reload", 3)
    assert done["output"] == 2


def test_an_event_raised_on_a_waiting_orchestration_is_stored_with_the_episode_reading_it():
    store = CountingStore()

    async def run() -> dict:
        engine = engine_on(store)
        await engine.start()
        try:
            await engine.start_new("wait_with_timeout", "w1", json.dumps(60))
            await engine.raise_event("w1", "Approval", json.dumps("yes"))
            return await stored_status_when(store, "w1", "Completed")
        finally:
            await engine.stop()

    done = asyncio.run(run())
    assert done["output"] == {"approved": "yes"}
    assert store.writes.count("w1") == 2  # the start, then the event with the episode it ended (was 3)


def test_an_event_raised_on_a_suspended_orchestration_is_stored_before_the_caller_hears_of_it():
    store = MemoryStore()

    async def raise_while_suspended() -> None:
        engine = engine_on(store)
        await engine.start()
        await engine.start_new("wait_with_timeout", "w2", json.dumps(60))
        await engine.suspend("w2", "hold on")
        await engine.raise_event("w2", "Approval", json.dumps("later"))
        await engine.stop()  # as good as a crash: only what is stored remains

    async def resume_after_a_restart() -> dict:
        engine = engine_on(store)
        await engine.start()
        try:
            await engine.resume("w2", "go on")
            return await stored_status_when(store, "w2", "Completed")
        finally:
            await engine.stop()

    asyncio.run(raise_while_suspended())
    stored = asyncio.run(store.read_partition("w2"))
    raised = [m["event"] for rk, m in stored.items()
              if rk.startswith("m") and m["event"]["EventType"] == EventType.EVENT_RAISED]
    assert [e["Name"] for e in raised] == ["Approval"]  # (the other message is the timer, due in 60 s)
    assert asyncio.run(resume_after_a_restart())["output"] == {"approved": "later"}


def test_an_event_whose_write_failed_is_refused_to_the_caller_and_not_half_applied():
    store = DownStore("w3")

    async def run() -> tuple[bool, dict]:
        engine = engine_on(store)
        await engine.start()
        try:
            store.down = False
            await engine.start_new("wait_with_timeout", "w3", json.dumps(60))
            store.down = True
            try:
                await engine.raise_event("w3", "Approval", json.dumps("lost"))
                refused = False
            except ConnectionError:
                refused = True
            store.down = False
            await engine.raise_event("w3", "Approval", json.dumps("again"))
            return refused, await stored_status_when(store, "w3", "Completed")
        finally:
            await engine.stop()

    refused, done = asyncio.run(run())
    assert refused
    assert done["output"] == {"approved": "again"}


def _stop_during_the_first_nap(store: MemoryStore, *, drain: bool) -> tuple[dict, dict]:
    """Starts two_naps, stops while the first nap runs (drained or not), starts again and lets it finish: the
    status the stop left, and the output in the end."""
    sample_app.calls.clear()

    async def run() -> tuple[dict, dict]:
        engine = engine_on(store)
        await engine.start()
        await engine.start_new("two_naps", "n1", json.dumps("nap"))
        while sample_app.calls.get("nap") != 1:
            await asyncio.sleep(0.01)
        if drain:
            assert await engine.drain(5.0)
        await engine.stop()
        left = await store.read_row("n1", STATUS)
        again = engine_on(store)
        await again.start()
        try:
            return left, await stored_status_when(store, "n1", "Completed")
        finally:
            await again.stop()

    return asyncio.run(run())


def test_a_drained_stop_lets_the_running_activity_finish_stores_its_result_and_starts_no_other():
    left, done = _stop_during_the_first_nap(MemoryStore(), drain=True)
    assert left["status"] == "Running"
    assert done["output"] == [1, 2]  # each nap ran once: the first finished before the stop, the second after
    assert sample_app.calls["nap"] == 2


def test_a_stop_without_drain_runs_the_interrupted_activity_again():
    _, done = _stop_during_the_first_nap(MemoryStore(), drain=False)
    assert done["output"] == [2, 3]  # the first nap was cut off and ran again: what draining saves
    assert sample_app.calls["nap"] == 3


def test_a_drain_gives_up_after_its_grace_period():
    store = MemoryStore()
    sample_app.calls.clear()

    async def run() -> bool:
        engine = engine_on(store)
        await engine.start()
        try:
            await engine.start_new("two_naps", "n2", json.dumps("short"))
            while sample_app.calls.get("short") != 1:
                await asyncio.sleep(0.01)
            return await engine.drain(0.05)
        finally:
            await engine.stop()

    assert asyncio.run(run()) is False


def test_a_drain_stores_the_result_of_an_activity_whose_instance_was_suspended_meanwhile():
    store = MemoryStore()
    sample_app.calls.clear()

    async def run() -> tuple[bool, float, dict]:
        engine = engine_on(store)
        await engine.start()
        await engine.start_new("two_naps", "n3", json.dumps("held"))
        while sample_app.calls.get("held") != 1:
            await asyncio.sleep(0.01)
        await engine.suspend("n3", "operator")
        started = asyncio.get_running_loop().time()
        drained = await engine.drain(5.0)  # no episode takes the result while suspended: stored as it is
        waited = asyncio.get_running_loop().time() - started
        await engine.stop()
        again = engine_on(store)
        await again.start()
        try:
            await again.resume("n3", "operator")
            return drained, waited, await stored_status_when(store, "n3", "Completed")
        finally:
            await again.stop()

    drained, waited, done = asyncio.run(run())
    assert drained and waited < 2.0
    assert done["output"] == [1, 2] and sample_app.calls["held"] == 2
