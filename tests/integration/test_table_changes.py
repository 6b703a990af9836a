"""Read-modify-write on Azurite under concurrency: no update undoes another, deleted rows stay deleted."""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from shared.automation import attempts
from shared.automation import subscriptions as subs
from shared.automation.store import WebhookStore
from shared.clock import iso_utc
from shared.config import Settings
from shared.errors import Conflict
from shared.storage.tables import Tables


@pytest.fixture()
def tables(azurite) -> Tables:
    return Tables(Settings.model_validate({"AzureWebJobsStorage": azurite.connection_string}))


def test_concurrent_changes_of_one_row_are_all_kept(tables):
    async def main() -> dict:
        await tables.upsert("counters", "p", "r", {"seen": []})

        async def add(n: int) -> None:
            await tables.change("counters", "p", "r", lambda row: {"seen": [*row["seen"], n]}, attempts=100)

        await asyncio.gather(*(add(n) for n in range(40)))
        return await tables.get("counters", "p", "r")

    assert sorted(asyncio.run(main())["seen"]) == list(range(40))  # a plain read-then-upsert loses most of them


def test_changes_that_create_the_row_at_the_same_time_are_all_kept(tables):
    async def main() -> dict:
        async def add(n: int) -> None:
            await tables.change("counters", "p", "fresh", lambda row: {"seen": [*row.get("seen", []), n]},
                                create=True, attempts=100)

        await asyncio.gather(*(add(n) for n in range(20)))
        return await tables.get("counters", "p", "fresh")

    assert sorted(asyncio.run(main())["seen"]) == list(range(20))


def test_a_change_made_in_place_is_written(tables):
    def in_place(row: dict) -> dict:
        row["n"] += 1
        return row

    async def main() -> dict:
        await tables.upsert("counters", "p", "mutable", {"n": 1})
        await tables.change("counters", "p", "mutable", in_place)
        return await tables.get("counters", "p", "mutable")

    assert asyncio.run(main()) == {"n": 2}


def test_a_deleted_row_is_not_brought_back_and_an_unchanged_one_not_written(tables):
    async def main() -> tuple:
        await tables.upsert("counters", "p", "gone", {"n": 1})
        await tables.delete("counters", "p", "gone")
        after_delete = await tables.change("counters", "p", "gone", lambda row: {"n": row["n"] + 1})
        await tables.upsert("counters", "p", "same", {"n": 1})
        unchanged = await tables.change("counters", "p", "same", lambda row: row)
        return after_delete, await tables.get("counters", "p", "gone"), unchanged

    assert asyncio.run(main()) == (None, None, {"n": 1})


def test_a_row_that_never_settles_is_a_retryable_conflict(tables):
    async def main() -> None:
        await tables.upsert("counters", "p", "busy", {"n": 0})
        client = await tables._table("counters")
        read = client.get_entity

        async def read_then_another_writer_gets_in(*args, **kwargs):
            entity = await read(*args, **kwargs)
            await tables.upsert("counters", "p", "busy", {"n": -1})
            return entity

        client.get_entity = read_then_another_writer_gets_in
        try:
            await tables.change("counters", "p", "busy", lambda row: {"n": row["n"] + 1}, attempts=3)
        finally:
            client.get_entity = read

    with pytest.raises(Conflict) as caught:
        asyncio.run(main())
    assert caught.value.transient and caught.value.status == 409


def test_a_410_and_a_success_at_the_same_time_leave_the_subscription_disabled(tables):
    now = datetime(2026, 11, 23, 12, tzinfo=timezone.utc)

    async def main() -> subs.Subscription:
        store = WebhookStore(tables)
        subscription, _ = subs.create(subs.SubscriptionIn(url="https://127.0.0.1:9/hook", events=["*"]), now,
                                      "127.0.0.1")
        subscription = subscription.model_copy(update={"failing_since": iso_utc(now - timedelta(hours=1))})
        await store.save_subscription(subscription)
        # both read the same enabled, failing subscription; each changes it on its own
        await asyncio.gather(*(attempts.note_health(store, subscription, ok, code, now, timedelta(days=3))
                               for ok, code in [(True, 200), (False, 410)] * 5))
        return await store.subscription(subscription.id, fresh=True)

    stored = asyncio.run(main())
    assert not stored.enabled and "410" in stored.disabled_reason  # the success did not undo the disabling
    assert stored.last_success_at == iso_utc(now)  # and the success was noted, not lost


def test_a_query_within_a_partition_finds_rows_whose_key_had_to_be_escaped(tables):
    async def main() -> list[str]:
        await tables.upsert("escaped", "a/b#c?d\x7f", "r1", {"n": 1}, {"Status": "pending"})
        await tables.upsert("escaped", "a/b#c?d\x7f", "r2", {"n": 2}, {"Status": "done"})
        await tables.upsert("escaped", "other", "r3", {"n": 3}, {"Status": "pending"})
        return [rk async for _, rk, _ in tables.query("escaped", "Status eq @status", {"status": "pending"},
                                                        partition="a/b#c?d\x7f")]

    assert asyncio.run(main()) == ["r1"]


def test_upsert_many_writes_every_row_whatever_the_transaction_limits(tables):
    """250 rows (past the 100 operations of one transaction), 40 rows of 30,000 characters and 70 of 25,000 quotes,
    which JSON escapes twice (past its 4 MiB, filling each transaction to the limit): all stored as given, their
    columns queryable, rows already there replaced."""
    many = {f"m{n:03}": {"n": n, "status": "answered" if n % 2 else "held"} for n in range(250)}
    big = {f"b{n:02}": {"n": n, "text": "é" * 30_000} for n in range(40)}
    quotes = {f"q{n:02}": {"n": n, "text": '"' * 25_000} for n in range(70)}

    async def main() -> tuple[dict, dict, list, dict | None]:
        await tables.upsert("batches", "chat", "m007", {"n": -1, "status": "pending"})
        await tables.upsert_many("batches", "chat", many, lambda row: {"Status": row["status"]})
        await tables.upsert_many("batches", "big/chat#1", big)
        await tables.upsert_many("batches", "quotes", quotes)
        await tables.upsert_many("batches", "one", {"only": {"n": 1}})
        stored = {rk: row async for rk, row in tables.partition("batches", "chat")}
        stored_big = {rk: row async for rk, row in tables.partition("batches", "big/chat#1")}
        held = [rk async for _, rk, _ in tables.query("batches", "Status eq 'held'", partition="chat")]
        assert {rk: row async for rk, row in tables.partition("batches", "quotes")} == quotes
        return stored, stored_big, held, await tables.get("batches", "one", "only")

    stored, stored_big, held, only = asyncio.run(main())
    assert stored == many
    assert stored_big == big
    assert sorted(held) == sorted(rk for rk, row in many.items() if row["status"] == "held")
    assert only == {"n": 1}


def test_upsert_many_atomic_writes_in_one_transaction_or_not_at_all(tables):
    fits = {f"r{n}": {"n": n} for n in range(100)}
    too_many = {f"r{n}": {"n": n} for n in range(101)}

    async def main() -> tuple[bool, bool, int, int]:
        refused = await tables.upsert_many("atomic", "too-many", too_many, atomic=True)
        written = await tables.upsert_many("atomic", "fits", fits, atomic=True)
        return (refused, written, len([1 async for _ in tables.partition("atomic", "too-many")]),
                len([1 async for _ in tables.partition("atomic", "fits")]))

    assert asyncio.run(main()) == (False, True, 0, 100)
