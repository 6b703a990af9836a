"""The few-seconds snapshot of subscriptions and rules: reuse within the window, reload after a change."""
from __future__ import annotations

import asyncio

from shared.automation.snapshot import Snapshot


def test_reads_within_the_window_reuse_the_value_and_clear_or_fresh_reload_it():
    loads = []

    async def load() -> int:
        loads.append(1)
        return len(loads)

    async def scenario() -> list[int]:
        snapshot: Snapshot[int] = Snapshot(seconds=60)
        seen = [await snapshot.get(load), await snapshot.get(load)]
        snapshot.clear()
        seen.append(await snapshot.get(load))
        seen.append(await snapshot.get(load, fresh=True))
        expired: Snapshot[int] = Snapshot(seconds=0)
        seen += [await expired.get(load), await expired.get(load)]
        return seen

    assert asyncio.run(scenario()) == [1, 1, 2, 3, 4, 5]


def test_a_change_made_while_a_read_runs_is_not_hidden_by_that_read():
    async def scenario() -> list[str]:
        snapshot: Snapshot[str] = Snapshot(seconds=60)
        state = {"value": "old"}

        async def slow_load() -> str:
            seen = state["value"]
            state["value"] = "new"  # a save lands (and clears) while this read is under way
            snapshot.clear()
            return seen

        first = await snapshot.get(slow_load)

        async def load() -> str:
            return state["value"]

        return [first, await snapshot.get(load)]

    assert asyncio.run(scenario()) == ["old", "new"]


def test_readers_arriving_during_a_reload_share_it_and_a_change_starts_a_new_one():
    async def scenario() -> tuple[list[int], list[int], int]:
        snapshot: Snapshot[int] = Snapshot(seconds=60)
        loads: list[int] = []
        release = asyncio.Event()

        async def load() -> int:
            loads.append(1)
            number = len(loads)
            await release.wait()
            return number

        readers = [asyncio.create_task(snapshot.get(load)) for _ in range(20)]
        await asyncio.sleep(0)
        readers[0].cancel()  # one reader giving up leaves the reload to the others
        snapshot.clear()  # a change lands while the reload runs: later readers must not get what it read
        after_change = [asyncio.create_task(snapshot.get(load)) for _ in range(5)]
        await asyncio.sleep(0)
        release.set()
        first = await asyncio.gather(*readers[1:])
        second = await asyncio.gather(*after_change)
        return first, second, len(loads)

    first, second, loads = asyncio.run(scenario())
    assert (first, second, loads) == ([1] * 19, [2] * 5, 2)


def test_a_failed_reload_fails_its_readers_and_the_next_read_tries_again():
    async def scenario() -> list[object]:
        snapshot: Snapshot[str] = Snapshot(seconds=60)
        calls = []

        async def load() -> str:
            calls.append(1)
            await asyncio.sleep(0)
            if len(calls) == 1:
                raise OSError("storage down")
            return "ok"

        outcomes = await asyncio.gather(*(snapshot.get(load) for _ in range(3)), return_exceptions=True)
        return [type(o).__name__ if isinstance(o, Exception) else o for o in outcomes] + [await snapshot.get(load),
                                                                                          len(calls)]

    assert asyncio.run(scenario()) == ["OSError", "OSError", "OSError", "ok", 2]
