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

    async def get(self, load: Callable[[], Awaitable[T]], *, fresh: bool = False) -> T:
        if not fresh and self._value is not None and time.monotonic() - self._value[0] < self.seconds:
            return self._value[1]
        value = await load()
        self._value = (time.monotonic(), value)
        return value

    def clear(self) -> None:
        self._value = None
