"""A WhatsApp turn cut off after any of its writes and run again: one reply, every message settled (Azurite)."""
from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from shared.ai.offline import OfflineProvider
from shared.config import Settings
from shared.storage.blobs import BlobStore
from shared.storage.tables import Tables
from shared.whatsapp import assistant
from shared.whatsapp.assistant import Deps
from shared.whatsapp.events import IncomingMessage
from shared.whatsapp.waha import Waha
from tests.support.fake_waha import FakeWaha


class Crash(Exception):
    """The worker dying: what was written stays, nothing after it runs."""


class CutAfter(Tables):
    """Tables of a worker that dies right after its `after`-th write has landed."""

    def __init__(self, settings: Settings, after: int) -> None:
        super().__init__(settings)
        self.after, self.writes = after, 0

    def _landed(self) -> None:
        self.writes += 1
        if self.writes == self.after:
            raise Crash(f"after write {self.after}")

    async def insert_tagged(self, *args, **kwargs):
        written = await super().insert_tagged(*args, **kwargs)
        self._landed()
        return written

    async def upsert(self, *args, **kwargs):
        await super().upsert(*args, **kwargs)
        self._landed()

    async def upsert_many(self, *args, **kwargs):
        await super().upsert_many(*args, **kwargs)
        self._landed()

    async def change(self, *args, **kwargs):
        changed = await super().change(*args, **kwargs)
        self._landed()
        return changed


@pytest.fixture(scope="module")
def waha():
    with FakeWaha() as server:
        yield server


@pytest.mark.parametrize("rate_limit", [10, 2], ids=["all answered", "one over the limit"])
def test_a_turn_cut_off_after_any_write_and_run_again_sends_one_reply(azurite, waha, rate_limit):
    settings = Settings.model_validate({"AzureWebJobsStorage": azurite.connection_string})

    def deps(tables: Tables) -> Deps:
        return Deps(tables, BlobStore(settings), Waha(waha.base_url, "key"), OfflineProvider(), rate_limit=rate_limit)

    async def turn_cut_after(after: int) -> tuple[str, bool]:
        chat = f"1555{uuid.uuid4().int % 10**7:07d}@c.us"
        plain = Tables(settings)
        for n in range(3):
            await assistant.record_incoming(plain, IncomingMessage(
                session="default", chat_id=chat, sender=chat, message_id=f"false_{chat}_{n}",
                text=f"question {n}: what is the rent?", timestamp=time.time() + n / 1000), "text")
        try:
            await assistant.answer_turn(chat, deps(CutAfter(settings, after)))
            cut = False
        except Crash:
            cut = True
        await assistant.answer_turn(chat, deps(plain))  # the activity run again after the restart
        return chat, cut

    async def main() -> list[tuple[int, str]]:
        runs, after, cut = [], 0, True
        while cut:  # every write of the turn in turn, then once with none cut
            after += 1
            chat, cut = await turn_cut_after(after)
            runs.append((after, chat))
        return runs

    runs = asyncio.run(main())
    assert len(runs) >= 3  # the turn writes more than once: the cuts fell inside it
    for after, chat in runs:
        replies = [s for s in waha.sent(chat) if s["text"] != assistant.RATE_NOTICE]
        assert len(replies) == 1, f"cut after write {after}: {len(replies)} replies"
        statuses = sorted(row["status"] for _, row in asyncio.run(_incoming(settings, chat)))
        assert statuses == (["answered"] * 3 if rate_limit == 10 else ["answered", "answered", "rate_limited"]), after


async def _incoming(settings: Settings, chat: str) -> list[tuple[str, dict]]:
    return [(rk, row) async for rk, row in Tables(settings).partition(assistant.MESSAGES, chat)
            if row["direction"] == "in"]
