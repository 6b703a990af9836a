"""An engine over the sample app and a store, for tests that drive it directly, and a poll of what it stored."""
from __future__ import annotations

import asyncio

import sample_app

from devhost.app_index import AppIndex
from devhost.engine import Engine
from devhost.store import STATUS, MemoryStore


def engine_on(store: MemoryStore, episodes: int = 4) -> Engine:
    return Engine(AppIndex.build(sample_app.app, "api"), store, max_episodes=episodes, hub_wait=0)


async def stored_status_when(store: MemoryStore, instance_id: str, wanted: str, timeout: float = 10.0) -> dict:
    """The instance's stored status row once it says `wanted`; fails after `timeout` seconds."""
    async def poll() -> dict:
        while True:
            row = await store.read_row(instance_id, STATUS)
            if row and row["status"] == wanted:
                return row
            await asyncio.sleep(0.01)

    return await asyncio.wait_for(poll(), timeout)


class DownStore(MemoryStore):
    """Storage that refuses every write of one instance until it is told to come back."""

    def __init__(self, instance_id: str) -> None:
        super().__init__()
        self.instance_id = instance_id
        self.down = True
        self.refused = 0

    async def write(self, pk, upserts, deletes=()) -> None:
        if pk == self.instance_id and self.down:
            self.refused += 1
            raise ConnectionError("storage unreachable")
        await super().write(pk, upserts, deletes)
