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
