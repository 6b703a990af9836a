"""The storage clients of an event loop close with it: no session left open, no loop kept alive."""
from __future__ import annotations

import asyncio
import gc
import uuid
import weakref

from shared.config import Settings
from shared.storage import close_clients
from shared.storage.blobs import BlobStore
from shared.storage.tables import Tables


def test_a_loop_that_closes_its_storage_clients_leaves_nothing_open_or_alive(azurite):
    settings = Settings.model_validate({"AzureWebJobsStorage": azurite.connection_string})
    reported: list[str] = []
    loops: list[weakref.ref] = []

    async def use() -> bytes:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _, context: reported.append(context["message"]))
        loops.append(weakref.ref(loop))
        tables, blobs = Tables(settings), BlobStore(settings)
        assert await tables.insert("ClosingLoops", "p", uuid.uuid4().hex, {"n": 1})
        ref = await blobs.put("closing-loops", "a.txt", b"x")
        data = await blobs.get(ref)
        await close_clients()
        return data

    assert asyncio.run(use()) == b"x"
    assert asyncio.run(use()) == b"x"  # a later loop makes clients of its own
    gc.collect()
    assert [ref() for ref in loops] == [None, None]  # nothing holds on to a finished loop and its clients
    assert reported == []  # aiohttp reports a session collected unclosed ("Unclosed client session")
