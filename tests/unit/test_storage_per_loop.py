"""Storage clients are made once per event loop, and a loop's are its own."""
from __future__ import annotations

import asyncio

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
    other_first, *_ = asyncio.run(use())
    assert other_first is not first  # another loop never gets the first one's clients, even under the same id
