"""A few seconds' memory of small, often-read collections (subscriptions, rules) read on every event."""
from __future__ import annotations

import time
from typing import Awaitable, Callable, Generic, TypeVar

T = TypeVar("T")
SECONDS = 5.0


class Snapshot(Generic[T]):
    """Changes made by this instance apply at once (`clear`); another instance's within SECONDS."""

    def __init__(self, seconds: float = SECONDS) -> None:
        self.seconds = seconds
        self._value: tuple[float, T] | None = None
        self._generation = 0

    async def get(self, load: Callable[[], Awaitable[T]], *, fresh: bool = False) -> T:
        if not fresh and self._value is not None and time.monotonic() - self._value[0] < self.seconds:
            return self._value[1]
        generation = self._generation
        value = await load()
        if generation == self._generation:  # a change cleared the snapshot while this read ran: do not keep it
            self._value = (time.monotonic(), value)
        return value

    def clear(self) -> None:
        self._value = None
        self._generation += 1
