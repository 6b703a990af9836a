"""A few seconds' memory of small, often-read collections (subscriptions, rules) read on every event."""
from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable, Generic, TypeVar

T = TypeVar("T")
SECONDS = 5.0


class Snapshot(Generic[T]):
    """Changes made by this instance apply at once (`clear`); another instance's within SECONDS.

    Readers that find the snapshot expired while a reload is under way wait for that reload instead of each
    reading the table again: under load, dozens of events arrive in the moment it expires.
    """

    def __init__(self, seconds: float = SECONDS) -> None:
        self.seconds = seconds
        self._value: tuple[float, T] | None = None
        self._generation = 0
        self._loading: tuple[asyncio.AbstractEventLoop, int, asyncio.Task] | None = None

    async def get(self, load: Callable[[], Awaitable[T]], *, fresh: bool = False) -> T:
        if not fresh and self._value is not None and time.monotonic() - self._value[0] < self.seconds:
            return self._value[1]
        loop = asyncio.get_running_loop()
        if not fresh and self._loading is not None and self._loading[:2] == (loop, self._generation):
            return await asyncio.shield(self._loading[2])  # one caller cancelled must not cancel the others
        generation = self._generation
        reload = loop.create_task(self._load(load, generation))
        reload.add_done_callback(_retrieved)
        self._loading = (loop, generation, reload)
        return await asyncio.shield(reload)

    async def _load(self, load: Callable[[], Awaitable[T]], generation: int) -> T:
        try:
            value = await load()
        finally:
            if self._loading is not None and self._loading[2] is asyncio.current_task():
                self._loading = None
        if generation == self._generation:  # a change cleared the snapshot while this read ran: do not keep it
            self._value = (time.monotonic(), value)
        return value

    def clear(self) -> None:
        self._value = None
        self._generation += 1  # readers from now on start a reload of their own, not join one begun before


def _retrieved(task: asyncio.Task) -> None:
    """A reload whose readers were all cancelled: its error is theirs to see, not the loop's to log."""
    if not task.cancelled():
        task.exception()
