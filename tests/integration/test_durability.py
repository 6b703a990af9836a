"""The task hub lives in Azure Storage: a `kill -9` of devhost mid-run loses no job."""
from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from devhost.store import STATUS, HubBusy, HubLost, TableStore
from tests.support.http import Http, wait_until
from tests.support.processes import FUNCTION_KEY, ROOT, free_port


def _statuses(http: Http, ids: list[str]) -> dict[str, str]:
    return {job_id: http.request("GET", f"/api/jobs/{job_id}")[2]["status"] for job_id in ids}


def _all_selftests_pass(http: Http, ids: list[str], timeout: float) -> None:
    def all_done():
        statuses = _statuses(http, ids)
        return statuses if set(statuses.values()) == {"done"} else None

    wait_until(all_done, timeout=timeout, interval=0.2)
    for job_id in ids:
        job = http.request("GET", f"/api/jobs/{job_id}")[2]
        assert job["result"]["ok"] is True, job
        assert job["result"]["checks"] == {"chain": True, "fan_out": True, "timer": True}, job


def test_selftest_jobs_finish_after_kill_9_and_restart(azurite, devhost_factory):
    first = devhost_factory()
    http = Http(first.base_url, FUNCTION_KEY)
    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(lambda _: http.request("POST", "/api/selftest"), range(20)))
    for status, headers, job in answers:
        assert status == 202, job
        assert headers["Location"] == f"/api/jobs/{job['job_id']}"
    ids = [job["job_id"] for _, _, job in answers]
    before = _statuses(http, ids)
    first.kill()
    assert set(before.values()) - {"done"}, "the kill came too late to prove anything"

    second = first.again(DEVHOST_HUB_WAIT_SECONDS="0").start()  # a dead holder frees the hub at once
    try:
        _all_selftests_pass(Http(second.base_url, FUNCTION_KEY), ids, timeout=90)
    finally:
        second.stop()


def test_selftest_jobs_finish_when_storage_goes_away_mid_run_and_comes_back(azurite, api):
    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(lambda _: api.request("POST", "/api/selftest"), range(10)))
    ids = [job["job_id"] for status, _, job in answers if status == 202]
    assert len(ids) == 10, answers
    azurite.stop(keep_data=True)
    time.sleep(3)  # writes and reads fail meanwhile
    azurite.start(attempts=1)  # the same ports and data
    _all_selftests_pass(api, ids, timeout=120)


def test_job_read_through_jobs_api_matches_durable_client_status(api):
    from azure.durable_functions import DurableOrchestrationClient

    status, _, job = api.request("POST", "/api/selftest?wait=20")
    assert status == 200 and job["status"] == "done", job
    rpc_port = api.host.extra_env["DEVHOST_RPC_PORT"]
    binding = json.dumps({"taskHubName": "IntakeHub", "creationUrls": {}, "managementUrls": {},
                          "rpcBaseUrl": f"http://127.0.0.1:{rpc_port}/durabletask/"})

    async def read():
        from devhost.host import release_sdk_session

        try:
            return await DurableOrchestrationClient(binding).get_status(job["job_id"])
        finally:
            await release_sdk_session()  # its session belongs to this loop, which ends here

    durable = asyncio.run(read())
    assert durable.runtime_status.value == "Completed"
    assert durable.output == {"result": job["result"], "usage": job["usage"]}
    assert durable.custom_status["message"] == job["progress"]["message"]
    assert durable.name == job["type"] == "selftest_pipeline"
    assert durable.instance_id == job["job_id"]


def test_health_reports_storage_and_turns_503_when_storage_is_down(azurite, api):
    status, _, body = api.request("GET", "/api/health")
    assert status == 200, body
    assert body["storage"]["reachable"] is True
    assert body["ai_provider"] == "offline" and body["version"]
    azurite.stop()
    status, _, body = api.request("GET", "/api/health")
    assert status == 503
    assert body["storage"]["reachable"] is False
    assert body["storage"]["error"]["code"] == "storage_unreachable"


def test_a_stopped_host_lets_a_delivery_under_way_finish_so_the_restart_sends_nothing_again(devhost_factory):
    from tests.support.receiver import Receiver

    with Receiver() as receiver:
        receiver.delay = 1.0  # the stop comes while the receiver is still answering
        first = devhost_factory(CALLBACK_ALLOWED_HOSTS="127.0.0.1")
        http = Http(first.base_url, FUNCTION_KEY)
        status, _, subscription = http.request("POST", "/api/webhooks/subscriptions",
                                               {"url": receiver.url, "events": ["custom.stop"]})
        assert status == 201, subscription
        receiver.use_secret(subscription["secret"])
        status, _, routed = http.request("POST", "/api/events", {"type": "custom.stop", "subject": "s", "data": {}})
        assert status == 202, routed
        wait_until(lambda: receiver.attempts, timeout=30, interval=0.02)
        first.stop()  # SIGTERM, as Ctrl-C or a deployment does

        second = first.again(DEVHOST_HUB_WAIT_SECONDS="0").start()
        try:
            api = Http(second.base_url, FUNCTION_KEY)
            delivery_id = routed["deliveries"][0]
            delivery = wait_until(lambda: (lambda d: d if d.get("status") == "delivered" else None)(
                api.request("GET", f"/api/webhooks/deliveries/{delivery_id}")[2]), timeout=30, interval=0.1)
            time.sleep(1.5)  # long enough for an attempt run again to reach the receiver
        finally:
            second.stop()
    assert len(receiver.attempts) == 1, [a["headers"]["webhook-id"] for a in receiver.attempts]
    assert len(delivery["attempts"]) == 1, delivery


def test_a_second_host_on_a_busy_hub_refuses_to_start_and_names_the_holder(devhost_factory):
    first = devhost_factory()
    second = first.again(DEVHOST_RPC_PORT=str(free_port()), DEVHOST_HUB_WAIT_SECONDS="1")
    with pytest.raises(RuntimeError):
        second.start(timeout=30)
    assert f"is in use by devhost pid {first.process.pid}" in second.log()
    status, _, job = Http(first.base_url, FUNCTION_KEY).request("POST", "/api/selftest?wait=20")
    assert status == 200 and job["status"] == "done", job


def test_a_stopped_host_hands_the_hub_over_at_once(devhost_factory):
    first = devhost_factory()
    first.stop()
    second = first.again(DEVHOST_HUB_WAIT_SECONDS="0").start()
    try:
        status, _, job = Http(second.base_url, FUNCTION_KEY).request("POST", "/api/selftest?wait=20")
        assert status == 200 and job["status"] == "done", job
    finally:
        second.stop()


def test_a_host_whose_lease_was_taken_learns_it_at_the_next_renewal(azurite):
    async def scenario():
        holder, rival = TableStore(azurite.connection_string, "LeaseHub"), TableStore(azurite.connection_string, "LeaseHub")
        try:
            await holder.open()
            await holder.claim(wait=0)
            await holder.renew()
            with pytest.raises(HubBusy):  # the holder is alive (this very process)
                await rival.claim(wait=0)
            lease = await rival._read_lease()
            lease["Expires"] = 0  # as if the holder had stopped renewing long ago
            await rival._table.update_entity(lease)
            await rival.claim(wait=0)
            with pytest.raises(HubLost):
                await holder.renew()
            await rival.release()
            assert await rival._read_lease() is None
        finally:
            await holder.close()
            await rival.close()

    asyncio.run(scenario())


def test_outbox_flushes_and_commits_of_one_instance_never_undo_each_other(azurite):
    """A partition write replaces the stored entity: two at once (an outbox flush, the next step's commit) must
    take turns, or one loses the other's rows (history, work, outbox)."""
    import sys

    sys.path.insert(0, str(ROOT / "tests" / "functions"))
    import sample_app

    from devhost.app_index import AppIndex
    from devhost.engine import Engine

    ids = [f"busy{i}" for i in range(60)]

    async def run() -> None:
        store = TableStore(azurite.connection_string, "OverlapHub")
        engine = Engine(AppIndex.build(sample_app.app, "api"), store, max_episodes=8, hub_wait=0)
        await engine.start()
        try:
            await asyncio.gather(*(engine.start_new("signals_while_working", i, json.dumps("shared")) for i in ids))
            for _ in range(240):
                counted = (await engine.read_entity("Counter", "shared"))[1]
                statuses = {(await store.read_row(i, STATUS))["status"] for i in ids}
                if statuses == {"Completed"} and counted == 6 * len(ids):
                    break
                await asyncio.sleep(0.25)
        finally:
            await engine.stop()
        restarted = TableStore(azurite.connection_string, "OverlapHub")  # no cache: what a restart reads
        try:
            for instance_id in ids:
                rows = await restarted.read_partition(instance_id)
                status = rows[STATUS]
                assert status["status"] == "Completed" and status["output"] == 6, status
                assert all(f"h{n:07d}" in rows for n in range(status["history_len"])), instance_id
                assert not [rk for rk in rows if rk[0] in "mwo"], (instance_id, sorted(rows))
            assert json.loads((await restarted.read_row("@counter@shared", STATUS))["state"]) == 6 * len(ids)
        finally:
            await restarted.close()

    asyncio.run(run())


def test_a_table_write_that_landed_but_raised_is_read_back_from_the_table_not_from_the_cache(azurite):
    async def scenario() -> tuple[dict, dict]:
        store = TableStore(azurite.connection_string, "CutOffHub")
        try:
            await store.open()
            await store.write("i1", {STATUS: {"status": "Running"}})
            upsert = store._table.upsert_entity

            async def lands_then_fails(*args, **kwargs):  # the answer is lost on the way back
                await upsert(*args, **kwargs)
                raise ConnectionError("connection reset")

            store._table.upsert_entity = lands_then_fails
            with pytest.raises(ConnectionError):
                await store.write("i1", {STATUS: {"status": "Completed"}})
            store._table.upsert_entity = upsert
            read = await store.read_partition("i1")
            await store.write("i1", {"m1": {"kind": "replay"}})  # built on what the table holds
            fresh = TableStore(azurite.connection_string, "CutOffHub")
            await fresh.open()
            try:
                return read, await fresh.read_partition("i1")
            finally:
                await fresh.close()
        finally:
            await store.close()

    read, stored = asyncio.run(scenario())
    assert read[STATUS]["status"] == "Completed"
    assert stored == {STATUS: {"status": "Completed"}, "m1": {"kind": "replay"}}


def test_a_purge_cut_off_after_the_table_delete_landed_leaves_no_cached_partition_behind(azurite):
    async def scenario() -> tuple[dict | None, dict]:
        store = TableStore(azurite.connection_string, "CutOffPurgeHub")
        try:
            await store.open()
            await store.write("p1", {STATUS: {"status": "Completed"}})
            delete = store._table.delete_entity

            async def lands_then_fails(*args, **kwargs):
                await delete(*args, **kwargs)
                raise ConnectionError("connection reset")

            store._table.delete_entity = lands_then_fails
            with pytest.raises(ConnectionError):
                await store.delete_partition("p1")
            store._table.delete_entity = delete
            read = await store.read_row("p1", STATUS)
            await store.write("p1", {"m1": {"kind": "late"}})  # a late delivery writes on what the table holds
            return read, await store.read_partition("p1")
        finally:
            await store.close()

    read, after = asyncio.run(scenario())
    assert read is None
    assert after == {"m1": {"kind": "late"}}  # the purged instance is not written back


@pytest.mark.parametrize("char", ['"', "Ж", "\\"])
def test_instances_of_several_mebibytes_of_escaped_text_are_stored_read_listed_and_purged(azurite, char):
    """Quotes and backslashes double at each JSON layer (an input is JSON in a status row in an entity's JSON):
    once 50,000 of them in an input overflowed the main entity, and 200,000 the 4 MiB of a transaction."""
    big = json.dumps({"text": char * 400_000})
    rows = {STATUS: {"status": "Running", "input": big}, "h0000000": {"Input": big}}

    async def scenario() -> tuple[dict, dict | None, list[dict], list]:
        store = TableStore(azurite.connection_string, "LargeHub")
        fresh = TableStore(azurite.connection_string, "LargeHub")  # no cache: what a restart reads
        try:
            await store.open()
            await store.write("big", rows)
            await store.write("big", {"m1": {"kind": "event"}})  # rewritten: the last state's spills go
            stored = await fresh.read_partition("big")
            status = await TableStore(azurite.connection_string, "LargeHub").read_row("big", STATUS)
            listed = [s for s in await fresh.status_rows() if s.get("input") == big]
            await store.delete_partition("big")
            left = [e async for e in store._table.query_entities("PartitionKey eq 'big'")]
            return stored, status, listed, left
        finally:
            await store.close()
            await fresh.close()

    stored, status, listed, left = asyncio.run(scenario())
    assert stored == {**rows, "m1": {"kind": "event"}}
    assert status == rows[STATUS] and listed == [rows[STATUS]]
    assert left == []


def test_a_large_write_cut_off_before_its_main_entity_leaves_the_last_state(azurite):
    big = json.dumps({"text": '"' * 300_000})

    async def scenario() -> tuple[dict, list]:
        store = TableStore(azurite.connection_string, "LargeCutHub")
        try:
            await store.open()
            await store.write("i", {STATUS: {"status": "Running", "input": big}, "m1": {"n": 1}})
            upsert = store._table.upsert_entity

            async def spills_only(entity, **kwargs):  # the host dies after the spills, before the main entity
                if entity["RowKey"] == "":
                    raise ConnectionError("cut off")
                return await upsert(entity, **kwargs)

            store._table.upsert_entity = spills_only
            with pytest.raises(ConnectionError):
                await store.write("i", {"m2": {"n": 2, "pad": '"' * 300_000}})
            store._table.upsert_entity = upsert
            fresh = TableStore(azurite.connection_string, "LargeCutHub")
            try:
                read = await fresh.read_partition("i")
            finally:
                await fresh.close()
            await store.delete_partition("i")  # the cut-off write's spills, which nothing names, go too
            return read, [e async for e in store._table.query_entities("PartitionKey eq 'i'")]
        finally:
            await store.close()

    read, left = asyncio.run(scenario())
    assert read == {STATUS: {"status": "Running", "input": big}, "m1": {"n": 1}}
    assert left == []


def test_spills_written_before_generations_are_still_read_and_replaced(azurite):
    from azure.data.tables import UpdateMode

    rows = {STATUS: {"status": "Running"}, "h0000000": {"pad": "a" * 900_000}}

    async def scenario() -> tuple[dict, list[str]]:
        store = TableStore(azurite.connection_string, "LegacyHub")
        try:
            await store.open()
            main, *spills = store._entities("old", rows)
            for n, spill in enumerate(spills, start=1):  # as the store wrote them before: x1, x2 and no gen
                await store._table.upsert_entity({**spill, "RowKey": f"x{n}"}, mode=UpdateMode.REPLACE)
            await store._table.upsert_entity({k: v for k, v in main.items() if k != "gen"}, mode=UpdateMode.REPLACE)
            read = await store.read_partition("old")
            await store.write("old", {"m1": {"n": 1}})
            keys = sorted([e["RowKey"] async for e in store._table.query_entities("PartitionKey eq 'old'")])
            return read, keys
        finally:
            await store.close()

    read, keys = asyncio.run(scenario())
    assert read == rows
    assert "x1" not in keys and "x2" not in keys and "" in keys and all(k == "" or k.startswith("y") for k in keys)
