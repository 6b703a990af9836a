"""A WhatsApp turn cut off after any of its writes and run again: one reply, every message settled (Azurite)."""
from __future__ import annotations

import asyncio
import http.client
import json
import time
import uuid
from typing import Any, Awaitable, Callable

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
    """Tables of a worker that dies right after its `after`-th write request (one row or one transaction) landed."""

    def __init__(self, settings: Settings, after: int) -> None:
        super().__init__(settings)
        self.after, self.writes = after, 0

    async def _table(self, name: str) -> Any:
        return _Cutting(await super()._table(name), self)

    def landed(self) -> None:
        self.writes += 1
        if self.writes == self.after:
            raise Crash(f"after write {self.after}")


class _Cutting:
    """A table client whose writes count towards the cut."""

    WRITES = {"create_entity", "upsert_entity", "update_entity", "submit_transaction", "delete_entity"}

    def __init__(self, client: Any, tables: CutAfter) -> None:
        self._client, self._tables = client, tables

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        if name not in self.WRITES:
            return method

        async def write(*args, **kwargs):
            result = await method(*args, **kwargs)  # a write refused (say, a row that exists) did not land
            self._tables.landed()
            return result

        return write


@pytest.fixture(scope="module")
def waha():
    with FakeWaha() as server:
        yield server


@pytest.mark.parametrize("rate_limit", [10, 2], ids=["all answered", "one over the limit"])
@pytest.mark.parametrize("transaction_rows", [None, 3], ids=["one transaction", "marked in several"])
def test_a_turn_cut_off_after_any_write_and_run_again_sends_one_reply(azurite, waha, monkeypatch, rate_limit,
                                                                     transaction_rows):
    """Every write of the turn in turn is the last before the worker dies; the activity then runs again. With
    transactions too small for the turn's rows (a long turn in real life), its messages are marked over several."""
    if transaction_rows:
        monkeypatch.setattr("shared.storage.tables._BATCH_ROWS", transaction_rows)
    settings = Settings.model_validate({"AzureWebJobsStorage": azurite.connection_string})

    def deps(tables: Tables) -> Deps:
        return Deps(tables, BlobStore(settings), Waha(waha.base_url, "key"), OfflineProvider(), rate_limit=rate_limit)

    async def turn_cut_after(after: int) -> tuple[str, bool]:
        chat = f"1555{uuid.uuid4().int % 10**7:07d}@c.us"
        plain = Tables(settings)
        await _three_messages(plain, chat)
        try:
            await assistant.answer_turn(chat, deps(CutAfter(settings, after)))
            cut = False
        except Crash:
            cut = True
        await _until_settled(chat, deps(plain))  # the activity run again after the restart, and later looks
        return chat, cut

    async def main() -> list[tuple[int, str]]:
        runs, after, cut = [], 0, True
        while cut:  # every write of the turn in turn, then once with none cut
            after += 1
            chat, cut = await turn_cut_after(after)
            runs.append((after, chat))
        return runs

    runs = asyncio.run(main())
    assert len(runs) >= 2  # the last run was not cut: every write of the turn had its cut
    for after, chat in runs:
        sent = [s["text"] for s in waha.sent(chat)]
        replies = [text for text in sent if text != assistant.RATE_NOTICE]
        assert len(replies) == 1, f"cut after write {after}: {len(replies)} replies"
        assert sent.count(assistant.RATE_NOTICE) == (rate_limit == 2), after  # stored with the reply: never lost
        rows = asyncio.run(_rows(settings, chat))
        statuses = sorted(row["status"] for row in rows if row["direction"] == "in")
        assert statuses == (["answered"] * 3 if rate_limit == 10 else ["answered", "answered", "rate_limited"]), after
        assert {row["status"] for row in rows if row["direction"] == "out"} == {"sent"}, after
        carried = [row for row in rows if row["direction"] == "state"]  # memory and rate, kept with the reply
        assert [m["content"] for m in carried[0]["memory"] if m["role"] == "assistant"] == replies, after
        assert len(carried[0]["rate"]["accepted"]) == min(3, rate_limit), after  # the messages let through
        assert carried[0]["rate"]["notified"] is (rate_limit == 2), after


async def _until_settled(chat: str, deps: Deps) -> None:
    """Turns as the conversation runs them, until it finds nothing pending: lines over the rate limit are a turn
    of their own after the reply, which sends the notice."""
    for _ in range(4):
        if (await assistant.answer_turn(chat, deps)).get("reason") == "nothing_pending":
            return
    raise AssertionError("the chat still had something pending after 4 turns")


async def _rows(settings: Settings, chat: str) -> list[dict]:
    return [row async for _, row in Tables(settings).partition(assistant.MESSAGES, chat)]


class CountingProvider(OfflineProvider):
    """The offline model, counting what it is asked."""

    def __init__(self) -> None:
        super().__init__()
        self.asked, self.questions = 0, []

    def chat(self, messages):
        self.asked += 1
        self.questions.append(messages)
        return super().chat(messages)


async def _three_messages(tables: Tables, chat: str) -> list[str]:
    keys = []
    for n in range(3):
        message = IncomingMessage(session="default", chat_id=chat, sender=chat, message_id=f"false_{chat}_{n}",
                                  text=f"question {n}: what is the rent?", timestamp=time.time() + n / 1000)
        await assistant.record_incoming(tables, message, "text")
        keys.append(f"{message.session}:{message.message_id}")
    return keys


@pytest.mark.parametrize("transaction_rows", [None, 2], ids=["one transaction", "marked in several"])
def test_a_turn_whose_reply_went_out_before_marks_its_messages_and_asks_the_model_nothing(azurite, waha, monkeypatch,
                                                                                         transaction_rows):
    """What a crash between a reply's row and its marks left under older code: the turn run again sends nothing
    and remembers the text the customer got, also when it is cut off after any of its own writes."""
    if transaction_rows:
        monkeypatch.setattr("shared.storage.tables._BATCH_ROWS", transaction_rows)
    settings = Settings.model_validate({"AzureWebJobsStorage": azurite.connection_string})
    plain, provider = Tables(settings), CountingProvider()

    def deps(tables: Tables) -> Deps:
        return Deps(tables, BlobStore(settings), Waha(waha.base_url, "key"), provider)

    async def left_by_older_code() -> str:
        chat = f"1555{uuid.uuid4().int % 10**7:07d}@c.us"
        keys = await _three_messages(plain, chat)
        await plain.upsert(assistant.MESSAGES, chat, assistant.reply_key(keys), {
            "direction": "out", "status": "sent", "text": "The rent is 2,350 EUR.", "kind": "reply",
            "chat_id": chat, "message_id": assistant.reply_key(keys), "received_at": time.time()},
            {"Status": "sent", "Direction": "out"})
        return chat

    async def main() -> list[tuple[int, str, dict | None, tuple]]:
        runs, after, cut = [], 0, True
        while cut:
            after += 1
            chat = await left_by_older_code()
            try:
                await assistant.answer_turn(chat, deps(CutAfter(settings, after)))
                cut = False
            except Crash:
                await assistant.answer_turn(chat, deps(plain))
            runs.append((after, chat, await assistant.conversation(plain, chat),
                         await assistant.unsettled(plain, chat, carried=False)))
        return runs

    runs = asyncio.run(main())
    assert provider.asked == 0
    for after, chat, conversation, left in runs:
        assert waha.sent(chat) == [], after
        assert sorted(m["status"] for m in conversation["messages"] if m["direction"] == "in") == ["answered"] * 3
        assert conversation["memory"][-1] == {"role": "assistant", "content": "The rent is 2,350 EUR."}, after
        assert left == ([], [], None), after  # nothing left to do, and the turn state not read for the count


def test_a_flood_is_answered_over_several_turns(azurite, waha, monkeypatch):
    monkeypatch.setattr(assistant, "TURN_MESSAGES", 2)
    settings = Settings.model_validate({"AzureWebJobsStorage": azurite.connection_string})
    tables, chat = Tables(settings), f"1555{uuid.uuid4().int % 10**7:07d}@c.us"
    deps = Deps(tables, BlobStore(settings), Waha(waha.base_url, "key"), OfflineProvider())

    async def main() -> tuple[list[int], list[str]]:
        await _three_messages(tables, chat)
        answered = []
        for _ in range(3):
            answered.append((await assistant.answer_turn(chat, deps)).get("answered", 0))
        return answered, [r["status"] for r in await _rows(settings, chat) if r["direction"] == "in"]

    answered, statuses = asyncio.run(main())
    assert answered == [2, 1, 0] and statuses == ["answered"] * 3
    assert len(waha.sent(chat)) == 2


def test_a_chat_answered_before_the_turn_state_row_keeps_its_memory_and_rate(azurite, waha):
    """Chats from before kept memory and the rate state in their conversation row: the next turn starts from it."""
    settings = Settings.model_validate({"AzureWebJobsStorage": azurite.connection_string})
    tables, chat = Tables(settings), f"1555{uuid.uuid4().int % 10**7:07d}@c.us"
    before = [{"role": "user", "content": "hello " * 5_000}, {"role": "assistant", "content": "How can I help?"}]

    async def main() -> tuple[dict, dict | None]:
        await tables.upsert(assistant.CONVERSATIONS, "chat", chat, {
            "chat_id": chat, "paused": False, "memory": before, "rate": {"accepted": [time.time()], "notified": False}})
        await _three_messages(tables, chat)
        deps = Deps(tables, BlobStore(settings), Waha(waha.base_url, "key"), OfflineProvider(), rate_limit=3)
        turn = await assistant.answer_turn(chat, deps)
        over = await assistant.answer_turn(chat, deps)  # the line over the limit: a turn of its own, its notice
        assert over["rate_limited"] == 1 and over["notice"] is True
        return turn, await tables.get(assistant.MESSAGES, chat, assistant.TURN_STATE)

    turn, carried = asyncio.run(main())
    assert turn["answered"] == 2  # the earlier message counted towards the limit: the third line waits
    assert carried["memory"][:2] == [{"role": "user", "content": before[0]["content"][:assistant.MEMORY_CHARS]},
                                     before[1]] and len(carried["memory"]) == 4
    assert len(carried["rate"]["accepted"]) == 3


def test_a_reply_sent_before_without_its_notice_gets_the_notice_alone(azurite, waha):
    """Older code sent the rate notice after the reply's marks: a crash before them left the notice unsent."""
    settings = Settings.model_validate({"AzureWebJobsStorage": azurite.connection_string})
    tables, provider, chat = Tables(settings), CountingProvider(), f"1555{uuid.uuid4().int % 10**7:07d}@c.us"

    async def main() -> list[dict]:
        keys = await _three_messages(tables, chat)
        replied = assistant.reply_key(keys[:2])  # the two let through under a limit of 2
        await tables.upsert(assistant.MESSAGES, chat, replied, {
            "direction": "out", "status": "sent", "text": "The rent is 2,350 EUR.", "kind": "reply",
            "chat_id": chat, "message_id": replied, "received_at": time.time()}, {"Status": "sent", "Direction": "out"})
        await _until_settled(chat, Deps(tables, BlobStore(settings), Waha(waha.base_url, "key"), provider,
                                        rate_limit=2))
        return await _rows(settings, chat)

    rows = asyncio.run(main())
    assert provider.asked == 0 and [s["text"] for s in waha.sent(chat)] == [assistant.RATE_NOTICE]
    assert sorted(r["status"] for r in rows if r["direction"] == "in") == ["answered", "answered", "rate_limited"]
    assert sorted(r["kind"] for r in rows if r["direction"] == "out") == ["notice", "reply"]


def a_chat(azurite, waha: FakeWaha) -> tuple[Tables, str, Deps, Callable[[int], Awaitable[None]]]:
    """Tables, a new chat, what its turns need, and `line(n)`, which stores the chat's line n as the webhook does."""
    settings = Settings.model_validate({"AzureWebJobsStorage": azurite.connection_string})
    tables, chat = Tables(settings), f"1555{uuid.uuid4().int % 10**7:07d}@c.us"
    deps = Deps(tables, BlobStore(settings), Waha(waha.base_url, "key"), OfflineProvider())

    async def line(n: int) -> None:
        await assistant.record_incoming(tables, IncomingMessage(
            session="default", chat_id=chat, sender=chat, message_id=f"false_{chat}_{n}", text=f"line {n}",
            timestamp=time.time()), "text")

    return tables, chat, deps, line


def test_a_conversation_is_woken_once_per_turn_and_again_after_it_found_nothing(azurite, waha):
    """The wake-up claims: the first message of a turn claims the wake-up, the rest of the burst need not wake
    the conversation, and once it found nothing pending (and sleeps) the next message claims again."""
    tables, chat, deps, line = a_chat(azurite, waha)

    async def message(n: int) -> bool:
        await line(n)
        return await assistant.claim_wake(tables, "default", chat, time.time()) is not None

    async def main() -> dict:
        seen: dict = {"claims": [await message(0), await message(1)]}
        seen["due"] = await assistant.next_turn(tables, chat, window_s=1.0, now=time.time())
        seen["claims"].append(await message(2))  # the conversation has yet to answer: it reads this one too
        seen["answered"] = (await assistant.answer_turn(chat, deps))["answered"]
        seen["stale"] = await assistant.claim_wake(tables, "default", chat, time.time() - 120, hold_s=5)  # long ago
        seen["idle"] = await assistant.next_turn(tables, chat, window_s=1.0, now=time.time())
        seen["left"] = [rk async for rk, _ in tables.partition(assistant.WAKES, chat)]
        seen["claims"].append(await message(3))
        return seen

    seen = asyncio.run(main())
    assert seen["claims"] == [True, False, False, True]
    assert 0 < seen["due"] <= 1.0 and seen["answered"] == 3
    assert seen["stale"] is not None and seen["idle"] is None and seen["left"] == []


def test_a_claim_keeps_its_conversation_from_sleeping_until_it_lapses(azurite, waha):
    """A claim holds its conversation awake for a while: a message the claiming webhook stored meanwhile woke
    nothing, so a conversation that found nothing pending must not clear the claim and sleep, but look again once
    the claim lapses, and answer it."""
    tables, chat, deps, line = a_chat(azurite, waha)

    async def main() -> dict:
        now = time.time()
        await line(0)
        seen: dict = {"held_for": await assistant.claim_wake(tables, "default", chat, now, hold_s=2.0) - now}
        seen["first"] = (await assistant.answer_turn(chat, deps))["answered"]
        seen["while_held"] = await assistant.next_turn(tables, chat, window_s=1.0, now=now + 0.5)
        await line(1)  # under the claim: the webhook that claimed neither claims again nor wakes
        seen["claims_kept"] = len([rk async for rk, _ in tables.partition(assistant.WAKES, chat)])
        seen["lapsed"] = await assistant.next_turn(tables, chat, window_s=1.0, now=now + 2.6)
        seen["second"] = (await assistant.answer_turn(chat, deps))["answered"]
        seen["then"] = await assistant.next_turn(tables, chat, window_s=1.0, now=now + 3.0)
        seen["claims_left"] = len([rk async for rk, _ in tables.partition(assistant.WAKES, chat)])
        return seen

    seen = asyncio.run(main())
    assert seen["held_for"] == pytest.approx(2.0) and seen["first"] == 1
    # it looks again once the hold lapsed on its clock too: 2 s after the claim, plus the skew allowed
    assert seen["while_held"] == pytest.approx(2.0) and seen["claims_kept"] == 1
    assert seen["lapsed"] == 0.0 and seen["second"] == 1  # the message stored meanwhile is its next turn
    assert seen["then"] is None and seen["claims_left"] == 0  # now it sleeps, and the next message claims


def test_a_line_that_came_after_the_conversation_found_nothing_waits_for_its_own_turn(azurite, waha):
    """When the conversation's wait ended with nothing pending (a claim's hold lapsed), a line that came just
    after is not answered at once: the rest of its burst would get a second reply. It is answered as its turn."""
    tables, chat, deps, line = a_chat(azurite, waha)
    deps.burst_s = 1.0

    async def main() -> tuple[str, str, int]:
        await line(0)
        early = await assistant.answer_turn(chat, deps, only_if_due=True)
        await asyncio.sleep(1.1)  # quiet for the window: now it is its turn
        due = await assistant.answer_turn(chat, deps, only_if_due=True)
        return early["reason"], due.get("reason", "answered"), due.get("answered", 0)

    assert asyncio.run(main()) == ("not_due", "answered", 1)


def test_the_answer_after_a_wait_that_found_nothing_pending_asks_for_a_due_turn_only(monkeypatch):
    """The orchestrator tells the answer step how its wait ended: a turn found due (any line since joins it), or
    nothing pending (only a turn due by now is answered)."""
    from datetime import timedelta

    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")  # what importing the app checks
    import function_app
    from devhost.app_index import AppIndex
    from devhost.engine import _flatten
    from devhost.events import EventType, event, iso, utcnow

    orchestrator = AppIndex.build(function_app.app, "api").orchestrators["whatsapp_conversation"].func
    chat, now = {"session": "default", "chat_id": "15550001111@c.us"}, utcnow()
    fire = now + timedelta(seconds=1)

    def answer_input(last_look: dict) -> dict:
        history = [
            event(EventType.ORCHESTRATOR_STARTED, now),
            event(EventType.EXECUTION_STARTED, now, Name="whatsapp_conversation", Version="",
                  Input=json.dumps(chat), OrchestrationInstance={"InstanceId": "c", "ExecutionId": "e"},
                  ParentInstance=None),
            event(EventType.TASK_SCHEDULED, now, 0, Name="whatsapp_pending", Input=json.dumps(chat)),
            event(EventType.ORCHESTRATOR_COMPLETED, now),
            event(EventType.ORCHESTRATOR_STARTED, now),
            event(EventType.TASK_COMPLETED, now, TaskScheduledId=0,
                  Result=json.dumps({"due_in_s": 1.0, "burst_seconds": 3.0})),  # held awake, nothing pending
            event(EventType.TIMER_CREATED, now, 1, FireAt=iso(fire)),
            event(EventType.ORCHESTRATOR_COMPLETED, now),
            event(EventType.ORCHESTRATOR_STARTED, fire),
            event(EventType.TIMER_FIRED, fire, TimerId=1, FireAt=iso(fire)),
            event(EventType.TASK_SCHEDULED, fire, 2, Name="whatsapp_pending", Input=json.dumps(chat)),
            event(EventType.ORCHESTRATOR_COMPLETED, fire),
            event(EventType.ORCHESTRATOR_STARTED, fire),
            event(EventType.TASK_COMPLETED, fire, TaskScheduledId=2, Result=json.dumps(last_look))]
        state = json.loads(orchestrator(json.dumps({
            "history": history, "input": json.dumps(chat), "instanceId": "c", "isReplaying": False,
            "parentInstanceId": None, "upperSchemaVersion": 1, "upperSchemaVersionNew": 2})))
        action = list(_flatten(state["actions"]))[-1]
        assert (action["actionType"], action["functionName"]) == (1, "whatsapp_answer"), state
        return json.loads(action["input"])

    assert answer_input({"due_in_s": None, "burst_seconds": 3.0}).get("only_if_due") is True
    assert "only_if_due" not in answer_input({"due_in_s": 0.0, "burst_seconds": 3.0})


def test_a_claim_made_anew_while_a_look_clears_the_claims_is_kept(azurite, waha):
    """Two looks at one chat at once (an activity run twice): the other deletes the claim this one listed, a
    webhook claims anew under the same key (and may hold the conversation awake); this one must not delete the
    new claim, but look again soon."""
    tables, chat, deps, line = a_chat(azurite, waha)
    now = time.time()

    class Racing(Tables):
        async def partition_tagged(self, table: str, pk: str):
            listed = [found async for found in super().partition_tagged(table, pk)]
            if table == assistant.WAKES:
                for rk, _, _ in listed:
                    await self.delete(table, pk, rk)
                assert await assistant.claim_wake(self, "default", chat, now) is not None  # the same minute's key
            for found in listed:
                yield found

    async def main() -> tuple[float | None, int]:
        await line(0)
        await assistant.claim_wake(tables, "default", chat, now)
        await assistant.answer_turn(chat, deps)
        due = await assistant.next_turn(Racing(tables.settings), chat, window_s=1.0, now=now)
        return due, len([rk async for rk, _ in tables.partition(assistant.WAKES, chat)])

    due, claims = asyncio.run(main())
    assert due == pytest.approx(assistant.RECLAIMED_LOOK_S) and claims == 1


def test_claims_hold_a_conversation_awake_for_at_most_the_longest_turn_wait(azurite):
    tables = Tables(Settings.model_validate({"AzureWebJobsStorage": azurite.connection_string}))
    now = time.time()
    until = asyncio.run(assistant.claim_wake(tables, "default", f"1555{uuid.uuid4().int % 10**7:07d}@c.us", now,
                                             hold_s=3600))
    assert until == pytest.approx(now + assistant.MAX_TURN_WAIT_S)  # well inside the sweep's minute


def test_claims_that_stood_for_minutes_wake_the_chats_whose_messages_wait_and_are_deleted_otherwise(azurite):
    """The sweep repairs a wake-up that went missing: a claim older than the last two minutes with messages
    waiting wakes its conversation (once, whatever the number of claims), one with nothing waiting is deleted,
    and the claims of turns under way (this minute's and the last) are left alone. A chat that cannot be woken
    keeps its claim for the next sweep, and holds up no other."""
    settings = Settings.model_validate({"AzureWebJobsStorage": azurite.connection_string})
    tables, now = Tables(settings), time.time()
    chats = {name: f"1556{uuid.uuid4().int % 10**7:07d}@c.us" for name in
             ("unreachable", "lost", "lost twice", "older claim", "idle", "idle twice", "this minute",
              "last minute")}

    async def stored(name: str, session: str = "biz") -> None:
        chat = chats[name]
        await assistant.record_incoming(tables, IncomingMessage(
            session=session, chat_id=chat, sender=chat, message_id=f"false_{chat}_0", text="Are you open?",
            timestamp=now), "text")

    async def main() -> tuple[list, Any, dict]:
        for name, ago in [("unreachable", 150), ("lost", 150), ("lost twice", 150), ("lost twice", 250),
                          ("this minute", 0), ("last minute", 60)]:
            await stored(name)
            assert await assistant.claim_wake(tables, "biz", chats[name], now - ago)
        for ago in (150, 250):
            await assistant.claim_wake(tables, "biz", chats["idle twice"], now - ago)
        await assistant.claim_wake(tables, "biz", chats["idle"], now - 150)
        await stored("older claim", session="other")
        # a claim from before claims named their session: the waiting message does
        await tables.insert(assistant.WAKES, chats["older claim"], f"{int((now - 150) // 60):012d}", {"at": now})
        woken: list[tuple[str, str]] = []

        async def wake(session: str, chat_id: str) -> None:
            if chat_id == chats["unreachable"]:
                raise ConnectionError("the host is restarting")
            woken.append((session, chat_id))

        swept = await assistant.sweep_wake_claims(tables, now, wake)
        left = {name: len([rk async for rk, _ in tables.partition(assistant.WAKES, chat)])
                for name, chat in chats.items()}
        return woken, swept, left

    woken, swept, left = asyncio.run(main())
    mine = {chat: name for name, chat in chats.items()}
    assert sorted((session, mine[chat]) for session, chat in woken if chat in mine) == [
        ("biz", "lost"), ("biz", "lost twice"), ("other", "older claim")]
    assert {mine[chat] for chat in swept.woken if chat in mine} == {"lost", "lost twice", "older claim"}
    assert swept.cleared >= 3
    assert left == {"unreachable": 1, "lost": 1, "lost twice": 2, "older claim": 1, "idle": 0, "idle twice": 0,
                    "this minute": 1, "last minute": 1}


def test_lines_typed_after_a_pause_are_the_next_turn(azurite, waha):
    """With a burst window, a turn is the lines typed within it of each other; it is due once the chat was quiet
    that long, and what came after a longer pause is answered in a turn of its own."""
    settings = Settings.model_validate({"AzureWebJobsStorage": azurite.connection_string})
    tables, chat = Tables(settings), f"1555{uuid.uuid4().int % 10**7:07d}@c.us"
    provider = CountingProvider()
    deps = Deps(tables, BlobStore(settings), Waha(waha.base_url, "key"), provider, burst_s=1.0)
    start = time.time() - 60

    async def received(n: int, at: float, sent: float | None = None) -> None:
        row = {"session": "default", "chat_id": chat, "sender": chat, "message_id": f"m{n}", "text": f"line {n}",
               "timestamp": at if sent is None else sent, "kind": "text", "direction": "in", "status": "pending",
               "received_at": at}
        await tables.insert(assistant.MESSAGES, chat, f"default:m{n}", row, {"Status": "pending", "Direction": "in"})

    async def main() -> tuple[list, list[int]]:
        for n, at in enumerate((start, start + 0.8, start + 1.6)):
            await received(n, at, sent=at if n != 1 else start - 1)  # WAHA delivered line 1 late
        due = [await assistant.next_turn(tables, chat, window_s=1.0, now=at) for at in (start + 2.0, start + 2.6)]
        await received(3, start + 5.0)  # the turn was late (a restart, say): these lines came after a pause
        return due, [(await assistant.answer_turn(chat, deps)).get("answered", 0) for _ in range(3)]

    due, answered = asyncio.run(main())
    assert due[0] == pytest.approx(0.6) and due[1] == 0.0
    assert answered == [3, 1, 0] and len(waha.sent(chat)) == 2
    assert [q[-1]["content"] for q in provider.questions] == ["line 1\nline 0\nline 2", "line 3"]  # as sent


@pytest.mark.parametrize("failures", [1, 3], ids=["a blip: retried", "through every retry: looks again later"])
def test_a_conversation_outlives_storage_failing_while_it_asks_what_is_pending(azurite, monkeypatch, failures):
    """The conversation's first step fails (storage unreachable): Durable retries it, and when every retry fails
    the conversation waits to look again; it does not fail for good (which would leave its wake-up claimed)."""
    monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string)  # what importing the app checks
    import function_app
    from devhost.app_index import AppIndex
    from devhost.engine import Engine
    from devhost.store import STATUS, MemoryStore
    from functions import whatsapp

    settings = Settings.model_validate({"AzureWebJobsStorage": azurite.connection_string})
    monkeypatch.setattr(whatsapp, "get_settings", lambda: settings)
    real, calls = assistant.next_turn, []

    async def blip_once(*args, **kwargs):
        calls.append(time.monotonic())
        if len(calls) <= failures:
            raise ConnectionError("storage unreachable")
        return await real(*args, **kwargs)

    monkeypatch.setattr(assistant, "next_turn", blip_once)
    chat = f"1555{uuid.uuid4().int % 10**7:07d}@c.us"

    async def run() -> dict:
        store = MemoryStore()
        engine = Engine(AppIndex.build(function_app.app, "api"), store, hub_wait=0)
        await engine.start()
        try:
            await engine.start_new("whatsapp_conversation", "conversation", json.dumps(
                {"session": "default", "chat_id": chat}))
            for _ in range(150):
                status = await store.read_row("conversation", STATUS)
                if len(calls) == expected_calls and status["history_len"] and status["status"] != "Pending":
                    await asyncio.sleep(0.2)
                    return await store.read_row("conversation", STATUS)
                await asyncio.sleep(0.1)
            return await store.read_row("conversation", STATUS)
        finally:
            await engine.stop()

    expected_calls = min(failures + 1, 3)  # three attempts in all (CRASH_RETRY)
    status = asyncio.run(run())
    assert len(calls) == expected_calls and status["status"] == "Running", (calls, status)


def test_a_conversation_started_before_this_version_replays_its_steps_and_answers(monkeypatch):
    """A conversation that slept through the deployment has the older steps in its history (asked how many were
    pending, waited for a message, a timer of the burst window): it replays them and goes on to answer."""
    from datetime import timedelta

    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")  # what importing the app checks
    import function_app
    from devhost.app_index import AppIndex
    from devhost.engine import _flatten
    from devhost.events import EventType, event, iso, utcnow

    orchestrator = AppIndex.build(function_app.app, "api").orchestrators["whatsapp_conversation"].func
    chat, now = {"session": "default", "chat_id": "15550001111@c.us"}, utcnow()
    fire = now + timedelta(seconds=1)
    history = [
        event(EventType.ORCHESTRATOR_STARTED, now),
        event(EventType.EXECUTION_STARTED, now, Name="whatsapp_conversation", Version="", Input=json.dumps(chat),
              OrchestrationInstance={"InstanceId": "c", "ExecutionId": "e"}, ParentInstance=None),
        event(EventType.TASK_SCHEDULED, now, 0, Name="whatsapp_pending", Input=json.dumps(chat)),
        event(EventType.ORCHESTRATOR_COMPLETED, now),
        event(EventType.ORCHESTRATOR_STARTED, now),
        event(EventType.TASK_COMPLETED, now, TaskScheduledId=0, Result=json.dumps({"count": 0, "burst_seconds": 1.0})),
        event(EventType.ORCHESTRATOR_COMPLETED, now),
        event(EventType.ORCHESTRATOR_STARTED, now),
        event(EventType.EVENT_RAISED, now, Name="message", Input=json.dumps({"chat_id": chat["chat_id"]})),
        event(EventType.TIMER_CREATED, now, 1, FireAt=iso(fire)),
        event(EventType.ORCHESTRATOR_COMPLETED, now),
        event(EventType.ORCHESTRATOR_STARTED, fire),
        event(EventType.TIMER_FIRED, fire, TimerId=1, FireAt=iso(fire))]
    state = json.loads(orchestrator(json.dumps({
        "history": history, "input": json.dumps(chat), "instanceId": "c", "isReplaying": False,
        "parentInstanceId": None, "upperSchemaVersion": 1, "upperSchemaVersionNew": 2})))
    actions = [(a["actionType"], a.get("functionName")) for a in _flatten(state["actions"])]
    assert not state.get("isDone") and actions[-1] == (1, "whatsapp_answer"), state  # CallActivityWithRetry


def test_a_conversation_is_woken_with_one_call_when_the_worker_guessed_right_and_two_when_not(azurite, monkeypatch):
    """A new chat's conversation is started (one call), one this worker saw running is raised (one call); one
    started elsewhere answers the start with 409 and is raised, one that ended answers the raise with 410 and
    is started: either way it runs and got the message."""
    monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string)  # what importing the app checks
    import function_app
    from azure.durable_functions import DurableOrchestrationClient

    from devhost.host import DevHost, HostConfig, HostThread
    from devhost.management import ManagementApi
    from devhost.store import MemoryStore
    from functions import whatsapp

    calls: list[tuple[str, str, int]] = []
    handle = ManagementApi.handle

    async def recorded(self, request, tail):
        response = await handle(self, request, tail)
        if "/raiseEvent/" in tail or tail.startswith("orchestrators/"):
            calls.append(("raise" if "/raiseEvent/" in tail else "start", tail.split("/")[-1], response.status))
        return response

    monkeypatch.setattr(ManagementApi, "handle", recorded)
    monkeypatch.setattr(whatsapp, "_seen_running", whatsapp.OrderedDict())
    chat = f"1555{uuid.uuid4().int % 10**7:07d}@c.us"
    instance = assistant.conversation_id("default", chat)
    with HostThread(DevHost(function_app.app, MemoryStore(), HostConfig(port=0, master_key="k"))) as host:
        client = DurableOrchestrationClient(host.host.management.binding())

        def wake() -> list[tuple[str, int]]:
            calls.clear()
            host.run(whatsapp._wake(client, "default", chat, 30.0))
            return [(kind, status) for kind, _, status in calls]

        def status() -> str:
            return host.run(client.get_status(instance)).runtime_status.value

        new_chat = wake()
        again = wake()
        whatsapp._seen_running.clear()  # as a worker that did not start it
        elsewhere = wake()
        host.run(client.terminate(instance, "test"))
        ended = wake()
        last = status()
    assert new_chat == [("start", 202)] and again == [("raise", 202)]
    assert elsewhere == [("start", 409), ("raise", 202)] and ended == [("raise", 410), ("start", 202)]
    assert last == "Running" and {name for _, name, _ in calls} == {instance, "message"}


def test_messages_stored_while_this_workers_claim_holds_the_conversation_neither_claim_nor_wake(azurite, monkeypatch):
    """Through the webhook: a new chat's first message claims and starts the conversation; the lines that follow
    within the claim's hold (the burst window, less the clock skew allowed) cost one insert each, nothing else;
    once it lapsed, a message tries the claim again (taken still: the conversation has yet to look)."""
    from shared.config import get_settings
    from shared.whatsapp.signature import sign

    key = "turns-test-hmac"
    monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string)
    monkeypatch.setenv("WAHA_HMAC_KEY", key)
    monkeypatch.setenv("WHATSAPP_BURST_SECONDS", "30")  # no turn while the test runs
    get_settings.cache_clear()
    import function_app

    from devhost.host import DevHost, HostConfig, HostThread
    from devhost.management import ManagementApi
    from devhost.store import MemoryStore
    from functions import whatsapp
    from tests.integration.test_whatsapp import event

    calls: list[str] = []
    handle, claim = ManagementApi.handle, assistant.claim_wake

    async def recorded(self, request, tail):
        response = await handle(self, request, tail)
        calls.append(f"{'raise' if '/raiseEvent/' in tail else 'start'} {response.status}")
        return response

    async def claimed(*args, **kwargs):
        until = await claim(*args, **kwargs)
        calls.append(f"claim {'won' if until is not None else 'taken'}")
        return until

    monkeypatch.setattr(ManagementApi, "handle", recorded)
    monkeypatch.setattr(assistant, "claim_wake", claimed)
    monkeypatch.setattr(whatsapp, "_held_awake", whatsapp.OrderedDict())
    chat = f"1555{uuid.uuid4().int % 10**7:07d}@c.us"
    instance = assistant.conversation_id("default", chat)
    try:
        with HostThread(DevHost(function_app.app, MemoryStore(), HostConfig(port=0, master_key="k"))) as host:
            def post(n: int) -> list[str]:
                calls.clear()
                raw = json.dumps(event(f"line {n}", chat)).encode()
                conn = http.client.HTTPConnection("127.0.0.1", host.host.port, timeout=30)
                conn.request("POST", "/api/webhook", body=raw, headers={
                    "content-type": "application/json", "X-Webhook-Hmac": sign(raw, key),
                    "X-Webhook-Hmac-Algorithm": "sha512"})
                response = conn.getresponse()
                assert (response.status, json.loads(response.read())) == (200, {"status": "accepted"})
                conn.close()
                return list(calls)

            first, second, third = post(0), post(1), post(2)
            whatsapp._held_awake[instance] = time.time() + assistant.CLOCK_SKEW_S  # as if the hold had lapsed
            lapsed = post(3)
    finally:
        get_settings.cache_clear()
    stored = asyncio.run(assistant.unsettled(Tables(Settings.model_validate(
        {"AzureWebJobsStorage": azurite.connection_string})), chat)).pending
    assert first == ["claim won", "start 202"] and second == third == []
    assert lapsed == ["claim taken"]
    assert [row["text"] for _, row in stored] == [f"line {n}" for n in range(4)]  # all waiting for the turn


async def _lines(tables: Tables, chat: str, tag: str, sent_at: list[float]) -> None:
    for n, at in enumerate(sent_at, start=1):
        await assistant.record_incoming(tables, IncomingMessage(
            session="default", chat_id=chat, sender=chat, message_id=f"false_{chat}_{tag}{n}", text=f"line {tag}{n}",
            timestamp=at), "text")


def _statuses(rows: list[dict]) -> dict[str, str]:
    return {row["text"]: row["status"] for row in rows if row["direction"] == "in"}


def test_lines_over_the_limit_stay_over_it_when_newer_lines_come_with_them(azurite, waha):
    """A phone offline for a while delivers a1..a15 (a11..a15 over the limit of 10) and, 75 s of sending later,
    b1..b5 all at once: a11..a15 get the notice, not an answer, however the turns split them."""
    settings = Settings.model_validate({"AzureWebJobsStorage": azurite.connection_string})
    tables, provider, chat = Tables(settings), CountingProvider(), f"1555{uuid.uuid4().int % 10**7:07d}@c.us"
    t0 = time.time() - 300

    async def main() -> list[dict]:
        await _lines(tables, chat, "a", [t0 + n for n in range(15)])
        await _lines(tables, chat, "b", [t0 + 75 + n for n in range(5)])
        await _until_settled(chat, Deps(tables, BlobStore(settings), Waha(waha.base_url, "key"), provider,
                                        rate_limit=10))
        return await _rows(settings, chat)

    statuses = _statuses(asyncio.run(main()))
    assert [statuses[f"line a{n}"] for n in range(11, 16)] == ["rate_limited"] * 5
    assert all(statuses[f"line a{n}"] == "answered" for n in range(1, 11))
    assert all(statuses[f"line b{n}"] == "answered" for n in range(1, 6))
    assert [s["text"] for s in waha.sent(chat)].count(assistant.RATE_NOTICE) == 1 and provider.asked == 2


def test_lines_held_by_a_pause_made_while_composing_count_towards_the_limit_after_resume(azurite, waha):
    settings = Settings.model_validate({"AzureWebJobsStorage": azurite.connection_string})
    tables, chat = Tables(settings), f"1555{uuid.uuid4().int % 10**7:07d}@c.us"

    class PausingProvider(CountingProvider):
        def chat(self, messages):
            asyncio.run(assistant.set_paused(Tables(settings), chat, True))  # the operator, while the model writes
            return super().chat(messages)

    async def main() -> list[dict]:
        await _lines(tables, chat, "a", [time.time() - 100 + n / 10 for n in range(15)])
        deps = Deps(tables, BlobStore(settings), Waha(waha.base_url, "key"), PausingProvider(), rate_limit=10)
        assert (await assistant.answer_turn(chat, deps))["reason"] == "paused"
        await assistant.set_paused(tables, chat, False)  # resumed before the conversation looks again
        await _until_settled(chat, deps)
        return await _rows(settings, chat)

    statuses = _statuses(asyncio.run(main()))
    assert [statuses[f"line a{n}"] for n in range(1, 11)] == ["held"] * 10
    assert [statuses[f"line a{n}"] for n in range(11, 16)] == ["rate_limited"] * 5  # not let through by the resume
    assert [s["text"] for s in waha.sent(chat)] == [assistant.RATE_NOTICE]
