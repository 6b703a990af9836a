"""Webhook fan-out on devhost + Azurite: deliveries per second and p99 from event to first delivery attempt.

Baselines in the same run: the same signed POSTs sent straight from one process with no durability (what a
hand-written sender does), to the same receivers; and the storage floor, the Table writes a durable delivery
needs with nothing else around them.
"""
from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import busy_cpu_s, cpu_used_since, processes_cpu_s  # noqa: E402
from tests.support.http import Http, wait_until  # noqa: E402
from tests.support.processes import FUNCTION_KEY, Azurite, DevhostProcess, free_port  # noqa: E402
from tests.support.receiver import Receiver  # noqa: E402


def log(*args: object) -> None:
    print(*args, file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))], 3)


def first_seen(receiver: Receiver) -> dict[str, float]:
    """When each webhook-id first reached the receiver."""
    seen: dict[str, float] = {}
    for record in list(receiver.attempts):
        seen.setdefault(record["headers"].get("webhook-id", ""), record["at"])
    return seen


def subscribe(api: Http, receivers: list[Receiver]) -> None:
    for receiver in receivers:
        status, _, sub = api.request("POST", "/api/webhooks/subscriptions",
                                      {"url": receiver.url, "events": ["custom.bench"]})
        assert status == 201, sub
        receiver.use_secret(sub["secret"])


def publish_all(api: Http, receivers: list[Receiver], prefix: str, events: int, rate: float | None,
                pids: dict[str, int]) -> dict:
    """Publishes `events` (16 at a time as fast as they go, or paced at `rate` per second, each client on a
    keep-alive connection) and waits for every receiver to get each once; deliveries per second, and lags
    from publish to first attempt."""
    published: dict[str, float] = {}
    local = threading.local()
    address = urllib.parse.urlsplit(api.base_url)

    def publish(n: int) -> None:
        if rate:
            time.sleep(max(0.0, started + n / rate - time.perf_counter()))
        if not hasattr(local, "conn"):
            local.conn = http.client.HTTPConnection(address.hostname, address.port, timeout=60)
        event_id = f"{prefix}-{n}"
        body = json.dumps({"type": "custom.bench", "subject": str(n), "data": {"n": n}, "id": event_id})
        sent = time.perf_counter()
        local.conn.request("POST", "/api/events", body, {"content-type": "application/json",
                                                         "x-functions-key": api.key})
        response = local.conn.getresponse()
        answer = response.read()
        assert response.status == 202, answer
        published[event_id] = sent

    cpu_before = processes_cpu_s(pids)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(publish, range(events)))
    publish_s = time.perf_counter() - started
    wait_until(lambda: all(set(first_seen(r)) >= set(published) for r in receivers), timeout=600, interval=0.2)
    cpu_used = cpu_used_since(cpu_before, pids)
    seen = [first_seen(r) for r in receivers]
    elapsed = max(s[i] for s in seen for i in published) - started
    lags = [s[i] - published[i] for s in seen for i in published]
    return {"deliveries_per_s": round(len(receivers) * events / elapsed, 1),
            "publish_per_s": round(events / publish_s, 1),
            "p50_first_attempt_s": percentile(lags, 50), "p99_first_attempt_s": percentile(lags, 99),
            **{f"{name}_cpu_ms_per_delivery": round(1000 * used / len(lags), 2) for name, used in cpu_used.items()}}


def baseline_run(receivers: list[Receiver], events: int) -> float:
    """The same signed POSTs straight from this process, 16 at a time: no storage, no retries, no log."""
    from shared.http_client import close_all
    from shared.webhooks import post_signed

    secret = "whsec_" + "YmVuY2gtYmFzZWxpbmUtc2VjcmV0LWJ5dGVz"
    for receiver in receivers:
        receiver.use_secret(secret)
        receiver.accepted.clear()

    async def run() -> None:
        gate = asyncio.Semaphore(16)

        async def one(receiver: Receiver, n: int) -> None:
            async with gate:
                attempt = await post_signed(receiver.url, {"n": n}, secrets=[secret], message_id=f"base-{n}",
                                            timeout=10, allowed_hosts="127.0.0.1")
                assert attempt.ok, attempt

        await asyncio.gather(*(one(r, n) for r in receivers for n in range(events)))
        await close_all()

    started = time.perf_counter()
    asyncio.run(run())
    return round(len(receivers) * events / (time.perf_counter() - started), 1)


def storage_floor_run(connection_string: str, deliveries: int, azurite_pid: int) -> dict:
    """What the storage path alone allows: the four Table writes of one delivery (its log row inserted, its
    orchestration inserted, the log row updated with the attempt, the orchestration updated as done; rows of
    about the real sizes), 16 deliveries at a time from this one process, same SDK and Azurite, nothing else."""
    from azure.data.tables import UpdateMode
    from azure.data.tables.aio import TableServiceClient

    from shared.storage.connection import client_options

    async def run() -> float:
        async with TableServiceClient.from_connection_string(connection_string, **client_options()) as service:
            log_rows = await service.create_table_if_not_exists("floordeliveries")
            hub = await service.create_table_if_not_exists("floorinstances")
            gate = asyncio.Semaphore(16)

            async def one(n: int) -> None:
                async with gate:
                    row = {"PartitionKey": "subscription", "RowKey": f"d{n}", "data": "d" * 900}
                    await log_rows.create_entity(row)
                    await hub.create_entity({"PartitionKey": f"i{n}", "RowKey": "", "d0": "i" * 2500})
                    await log_rows.update_entity({**row, "data": "a" * 1100}, mode=UpdateMode.REPLACE)
                    await hub.upsert_entity({"PartitionKey": f"i{n}", "RowKey": "", "d0": "c" * 3500},
                                            mode=UpdateMode.REPLACE)

            started = time.perf_counter()
            await asyncio.gather(*(one(n) for n in range(deliveries)))
            return time.perf_counter() - started

    pids = {"client": os.getpid(), "azurite": azurite_pid}
    cpu_before = processes_cpu_s(pids)
    elapsed = asyncio.run(run())
    cpu_used = cpu_used_since(cpu_before, pids)
    return {"storage_floor_deliveries_per_s": round(deliveries / elapsed, 1),
            **{f"storage_floor_{name}_cpu_ms_per_delivery": round(1000 * used / deliveries, 2)
               for name, used in cpu_used.items()}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--subscriptions", type=int, default=3)
    parser.add_argument("--paced-rate", type=float, default=10.0, help="events per second of the paced run")
    args = parser.parse_args()
    cpu_before = busy_cpu_s()
    azurite = Azurite().start()
    try:
        host = DevhostProcess(azurite.connection_string, {
            "DEVHOST_RPC_PORT": str(free_port()), "CALLBACK_ALLOWED_HOSTS": "127.0.0.1", "AI_PROVIDER": "offline",
            "DEVHOST_LOG_LEVEL": "WARNING", "LOG_LEVEL": "WARNING"}).start()
        receivers = [Receiver() for _ in range(args.subscriptions)]
        for receiver in receivers:
            receiver.__enter__()
        try:
            log(f"durable: {args.events} events x {args.subscriptions} subscriptions")
            api = Http(host.base_url, FUNCTION_KEY)
            subscribe(api, receivers)
            pids = {"devhost": host.process.pid, "azurite": azurite.process.pid, "bench_clients": os.getpid()}
            durable = publish_all(api, receivers, "burst", args.events, None, pids)
            log("durable, as fast as events come", durable)
            paced = publish_all(api, receivers, "paced", int(args.paced_rate * 20), args.paced_rate, pids)
            log(f"durable, {args.paced_rate} events/s", paced)
            baseline = baseline_run(receivers, args.events)
            log("baseline deliveries/s", baseline)
            floor = storage_floor_run(azurite.connection_string, args.events * args.subscriptions,
                                      azurite.process.pid)
            log("storage floor", floor)
        finally:
            for receiver in receivers:
                receiver.__exit__(None, None, None)
            host.stop()
    finally:
        azurite.stop()
    cpu_after = busy_cpu_s()
    print(json.dumps({"bench": "automation", "events": args.events, "subscriptions": args.subscriptions, **durable,
                      "paced_events_per_s": args.paced_rate, "paced_deliveries_per_s": paced["deliveries_per_s"],
                      "paced_p50_first_attempt_s": paced["p50_first_attempt_s"],
                      "paced_p99_first_attempt_s": paced["p99_first_attempt_s"],
                      "baseline_direct_deliveries_per_s": baseline,
                      "durable_vs_direct": round(durable["deliveries_per_s"] / baseline, 3), **floor,
                      "durable_vs_storage_floor": round(durable["deliveries_per_s"]
                                                        / floor["storage_floor_deliveries_per_s"], 3),
                      "aim_deliveries_per_s": 100, "aim_p99_first_attempt_s": 1.0,
                      "machine_busy_cpu_s": None if cpu_before is None or cpu_after is None
                      else round(cpu_after - cpu_before, 1)}))


if __name__ == "__main__":
    main()
