"""Storage clients are made once per event loop, and a loop's are its own."""
from __future__ import annotations

import asyncio
import weakref

import pytest

from shared.storage.clients import PerLoop


def test_each_loop_has_its_own_dict_until_it_is_forgotten():
    per_loop = PerLoop()

    async def use() -> tuple[dict, dict, dict, dict]:
        first, again = per_loop.here(), per_loop.here()
        first["service"] = object()
        forgotten = per_loop.forget_here()
        return first, again, forgotten, per_loop.here()

    first, again, forgotten, after = asyncio.run(use())
    assert first is again and forgotten is first  # made once for the loop, handed back when forgotten
    assert after == {}  # a loop whose clients were forgotten makes new ones


def test_a_loop_given_the_id_of_an_earlier_one_does_not_get_its_clients():
    per_loop = PerLoop()

    class Gone:
        """Stands for a loop that ended without closing its clients."""

    async def use() -> dict:
        gone = Gone()
        per_loop._made[id(asyncio.get_running_loop())] = (weakref.ref(gone), {"service": "bound to the old loop"})
        return per_loop.here()

    assert asyncio.run(use()) == {}


def test_closing_closes_every_client_even_when_one_fails():
    per_loop = PerLoop()
    closed: list[str] = []

    class Client:
        def __init__(self, name: str, fails: bool = False) -> None:
            self.name, self.fails = name, fails

        async def close(self) -> None:
            closed.append(self.name)
            if self.fails:
                raise OSError("connection reset")

    async def use() -> dict:
        made = per_loop.here()
        made.update(a=Client("a", fails=True), b=Client("b"), flag=True)
        with pytest.raises(OSError):
            await per_loop.close_here()
        return per_loop.here()

    assert asyncio.run(use()) == {} and sorted(closed) == ["a", "b"]
