"""Devhost benchmark: Durable throughput, HTTP latency, import cost and a Celery+Redis baseline, as one JSON line."""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import logging
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
# `python bench/devhost.py` puts bench/ first on sys.path, where this file would shadow the `devhost` package.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if p and Path(p).resolve() != ROOT / "bench"]

from bench.machine import busy_cpu_s, own_cpu_s  # noqa: E402
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")  # every connection stays on the loopback

log = logging.getLogger("bench")

CHAINS = (1, 3, 10)
FUNCTION_KEY = "bench-function-key"
MASTER_KEY = "bench-master-key"
TERMINAL = ("Completed", "Failed", "Terminated", "Canceled")
AIMS = {"selftest_ack_p99_ms_max": 30.0, "memory_3_step_per_s_min": 100.0, "azurite_3_step_per_s_min": 25.0,
        "import_overhead_ms_max": 300.0}


def _progress(message: str, *args: Any) -> None:
    log.info(message, *args)


def _percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def _summary(samples: list[float]) -> dict:
    return {"p50": round(_percentile(samples, 50), 2), "p99": round(_percentile(samples, 99), 2),
            "mean": round(statistics.fmean(samples), 2), "max": round(max(samples), 2), "n": len(samples)}


# ---------------------------------------------------------------------------------------------- processes

def _stop_process(process: subprocess.Popen, name: str, grace: float = 10.0, quiet: bool = False) -> None:
    """SIGTERM to the process group the bench made for it, SIGKILL after `grace` seconds."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        if not quiet:
            log.warning("%s did not stop in %.0f s; killing it", name, grace)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass


def _start_azurite(stack: contextlib.ExitStack):
    from tests.support.processes import Azurite

    azurite = Azurite()

    def stop() -> None:
        # Azurite.stop() waits 10 s after SIGTERM and then gives up, leaving it running. After the bench a
        # loaded Azurite spends over 10 s saving data that is thrown away anyway: SIGKILL it after 3 s.
        started = time.perf_counter()
        if azurite.process is not None:
            _stop_process(azurite.process, "azurite", 3.0, quiet=True)
        azurite.stop()
        _progress("Azurite stopped in %.1f s", time.perf_counter() - started)

    stack.callback(stop)  # before start(): a half-started Azurite is cleaned up too
    azurite.start()
    return azurite


# ---------------------------------------------------------------------------------------------- 1. throughput

def _host_config(**overrides: Any):
    from devhost.host import HostConfig

    return HostConfig.from_host_json(ROOT / "host.json", port=0, rpc_port=0, function_key=FUNCTION_KEY,
                                     master_key=MASTER_KEY, **overrides)


async def _run_chains(host, client, jobs: int, length: int, prefix: str, poll: float,
                      timeout: float) -> dict:
    """Starts `jobs` chains at once through the real client; returns timings once all are terminal."""
    from azure.durable_functions import OrchestrationRuntimeStatus

    from devhost.events import parse_iso

    t0 = time.time()
    ids = await asyncio.gather(*(client.start_new("chain", f"{prefix}{i:05d}", length) for i in range(jobs)))
    started = time.time()
    mine = set(ids)
    polls = 0
    # Polls the engine's store, not the client: the SDK parses two timestamps per status with dateutil, which
    # for a few hundred instances every 100 ms would eat a fair share of the very loop being measured.
    while True:
        await asyncio.sleep(poll)
        polls += 1
        rows = [r for r in await host.store.status_rows() if r["id"] in mine]
        if len(rows) == jobs and all(r["status"] in TERMINAL for r in rows):
            break
        if time.time() - t0 > timeout:
            raise TimeoutError(f"chains of {length} still running after {timeout} s")
    seen = time.time()
    done = await client.get_status_by(instance_id_prefix=prefix)
    failed = [(s.instance_id, s.runtime_status, s.output) for s in done
              if s.runtime_status != OrchestrationRuntimeStatus.Completed or s.output != length]
    if failed or len(done) != jobs:
        raise RuntimeError(f"{len(failed)} of {len(done)}/{jobs} chains did not complete correctly: {failed[:1]}")
    # The poll bounds the end only to `poll` seconds; the status rows know when each instance finished.
    finished = max(parse_iso(r["updated"]).timestamp() for r in rows)
    return {"wall_s": finished - t0, "start_all_s": started - t0, "seen_s": seen - t0, "polls": polls}


def _measure_chains(backend: str, make_store: Callable[[str], Any], jobs: int, length: int, warmup: int,
                    poll: float, profile: bool) -> dict:
    from azure.durable_functions import DurableOrchestrationClient

    from bench import chain_app
    from devhost.host import DevHost, HostThread

    hub = f"BenchChain{length}x{uuid.uuid4().hex[:6]}"
    config = _host_config(hub=hub)
    with HostThread(DevHost(chain_app.app, make_store(hub), config)) as running:
        client = DurableOrchestrationClient(running.host.management.binding())
        running.run(_run_chains(running.host, client, warmup, length, "warm-", poll, 120), timeout=150)
        profiler = None
        if profile:
            import cProfile

            profiler = cProfile.Profile()
            running.loop.call_soon_threadsafe(profiler.enable)  # cProfile in 3.11 is per thread: the host's
        try:
            timing = running.run(_run_chains(running.host, client, jobs, length, "run-", poll, 600), timeout=650)
        finally:
            if profiler is not None:
                running.loop.call_soon_threadsafe(profiler.disable)
                running.run(asyncio.sleep(0))
                _print_profile(profiler, f"{backend} chain of {length}")
    per_s = jobs / timing["wall_s"]
    _progress("%-7s chain=%-2d jobs=%d wall=%.2fs -> %.1f jobs/s (%.0f activities/s; all started after %.2fs)",
              backend, length, jobs, timing["wall_s"], per_s, per_s * length, timing["start_all_s"])
    return {"backend": backend, "chain": length, "jobs": jobs, "jobs_per_s": round(per_s, 1),
            "activities_per_s": round(per_s * length, 1),
            **{k: round(v, 3) if isinstance(v, float) else v for k, v in timing.items()}}


def _print_profile(profiler, title: str) -> None:
    import io
    import pstats

    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(40)
    print(f"===== profile of the host thread: {title} =====\n{out.getvalue()}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------- 2. latency

def _http_latencies(port: int, method: str, path: str, requests: int, warmup: int, expect: int,
                    interval: float = 0.0) -> list[float]:
    """Sequential requests on one keep-alive connection; milliseconds from send to the last body byte.

    With `interval`, a request starts every `interval` seconds at most (paced) instead of back to back.
    """
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"x-functions-key": FUNCTION_KEY}
    body = b"" if method == "POST" else None
    samples = []
    try:
        for i in range(warmup + requests):
            started = time.perf_counter()
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            content = response.read()
            elapsed = (time.perf_counter() - started) * 1000
            if response.status != expect:
                raise RuntimeError(f"{method} {path} answered {response.status}, not {expect}: {content[:300]!r}")
            if i >= warmup:
                samples.append(elapsed)
            if interval:
                time.sleep(max(0.0, interval - (time.perf_counter() - started)))
    finally:
        conn.close()
    return samples


def _measure_latency(connection_string: str, requests: int, warmup: int, paced_requests: int, paced_rate: float,
                     profile: bool) -> dict:
    import function_app

    from devhost.host import DevHost, HostThread
    from devhost.store import TableStore

    config = _host_config()
    with HostThread(DevHost(function_app.app, TableStore(connection_string, config.hub), config)) as running:
        port = running.host.port
        health = _http_latencies(port, "GET", "/api/health", requests, warmup, 200)
        _progress("GET /api/health: %s", _summary(health))
        # Every selftest job runs a dozen activities and a 1 s timer after its 202. Paced, the host keeps up with
        # them; back to back (the headline figure), each request also waits behind the jobs the earlier ones left.
        paced = _http_latencies(port, "POST", "/api/selftest", paced_requests, min(warmup, 3), 202, 1 / paced_rate)
        _progress("POST /api/selftest at %.1f/s: %s", paced_rate, _summary(paced))
        profiler = None
        if profile:
            import cProfile

            profiler = cProfile.Profile()
            running.loop.call_soon_threadsafe(profiler.enable)
        try:
            selftest = _http_latencies(port, "POST", "/api/selftest", requests, warmup, 202)
        finally:
            if profiler is not None:
                running.loop.call_soon_threadsafe(profiler.disable)
                running.run(asyncio.sleep(0))
                _print_profile(profiler, "POST /api/selftest")
        _progress("POST /api/selftest back to back: %s", _summary(selftest))
    return {"health": _summary(health), "selftest": dict(_summary(selftest), mode="back_to_back"),
            "selftest_paced": dict(_summary(paced), rate_per_s=paced_rate)}


# ---------------------------------------------------------------------------------------------- 3. imports

def _import_ms(modules: str) -> float:
    code = ("import time; t = time.perf_counter(); import {m}; "
            "print((time.perf_counter() - t) * 1000)").format(m=modules)
    env = dict(os.environ, AzureWebJobsStorage="UseDevelopmentStorage=true", PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"import {modules} failed:\n{done.stderr[-2000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def _measure_imports(runs: int) -> dict:
    app, sdk = [], []
    for _ in range(runs):  # interleaved, so drift in machine load hits both alike
        sdk.append(_import_ms("azure.functions, azure.durable_functions"))
        app.append(_import_ms("function_app"))
    result = {"function_app": round(statistics.median(app), 1), "sdk_only": round(statistics.median(sdk), 1)}
    result["overhead"] = round(result["function_app"] - result["sdk_only"], 1)
    result["runs"] = runs
    _progress("import ms (median of %d): %s; function_app runs %s, sdk runs %s", runs, result,
              [round(x) for x in app], [round(x) for x in sdk])
    return result


# ---------------------------------------------------------------------------------------------- 4. celery

def _measure_celery(stack: contextlib.ExitStack, jobs: int, concurrency: int, pool: str, rounds: int,
                    warmup: int) -> dict:
    from tests.support.processes import free_port, wait_for_port

    redis_bin = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    folder = tempfile.mkdtemp(prefix="bench-redis-")
    stack.callback(shutil.rmtree, folder, True)
    redis = subprocess.Popen([redis_bin, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--dir", folder, "--loglevel", "warning"],
                             stdout=subprocess.DEVNULL, stderr=sys.stderr, start_new_session=True)
    stack.callback(_stop_process, redis, "redis-server")
    wait_for_port(port)

    url = f"redis://127.0.0.1:{port}"
    worker_env = dict(os.environ, BENCH_CELERY_REDIS=url, PYTHONPATH=str(ROOT))
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "bench.celery_chain", "worker", "-P", pool, "-c", str(concurrency),
         "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "WARNING",
         "-n", f"bench{port}@127.0.0.1"],
        cwd=ROOT, env=worker_env, stdout=sys.stderr, stderr=sys.stderr, start_new_session=True)
    stack.callback(_stop_process, worker, "celery worker", 15.0)

    from celery import chain

    from bench.celery_chain import make_app

    client = make_app(url)
    stack.callback(client.close)  # runs first: the client lets go of Redis before the server stops
    step = client.tasks["bench.step"]

    def run(n: int, timeout: float) -> float:
        t0 = time.perf_counter()
        results = [chain(step.s(0), step.s(), step.s()).apply_async() for _ in range(n)]
        for result in results:
            value = result.get(timeout=timeout)
            if value != 3:
                raise RuntimeError(f"celery chain returned {value!r}, not 3")
        return time.perf_counter() - t0

    run(warmup, 120)  # also waits for the worker to come up
    walls = [run(jobs, 300) for _ in range(rounds)]
    per_s = [jobs / w for w in walls]
    _progress("celery+redis 3-step chain, pool=%s concurrency=%d: %s jobs/s", pool, concurrency,
              [round(x, 1) for x in per_s])
    return {"jobs": jobs, "rounds": [round(x, 1) for x in per_s], "jobs_per_s": round(statistics.median(per_s), 1)}


# ---------------------------------------------------------------------------------------------- main

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--memory-jobs", type=int, default=200)
    parser.add_argument("--azurite-jobs", type=int, default=100)
    parser.add_argument("--warmup-jobs", type=int, default=10)
    parser.add_argument("--requests", type=int, default=200, help="timed requests per endpoint")
    parser.add_argument("--warmup-requests", type=int, default=20)
    parser.add_argument("--paced-requests", type=int, default=30, help="timed selftest starts at --paced-rate")
    parser.add_argument("--paced-rate", type=float, default=2.0, help="selftest starts per second when paced")
    parser.add_argument("--import-runs", type=int, default=5)
    parser.add_argument("--celery-pool", choices=("prefork", "threads"), default="prefork")
    parser.add_argument("--celery-rounds", type=int, default=3)
    parser.add_argument("--profile", choices=("memory", "azurite", "selftest"), action="append", default=[],
                        help="cProfile the host thread during that phase (3-step chains) and print it to stderr")
    args = parser.parse_args()

    # Warnings from anyone reach stderr; the app's INFO records (it sets its own logger's level) are still
    # created, as under the Functions host, but not written out. The bench's progress lines have their own handler.
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.WARNING)
    progress = logging.StreamHandler(sys.stderr)
    progress.setFormatter(logging.Formatter("%(asctime)s bench %(message)s"))
    log.addHandler(progress)
    log.setLevel(logging.INFO)
    log.propagate = False

    def terminate(signum, _frame):  # let the finally blocks stop every child process
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)

    bench_started = time.perf_counter()
    load_before = os.getloadavg()
    busy_before, own_before = busy_cpu_s(), own_cpu_s()
    config = _host_config()
    report: dict[str, Any] = {"bench": "devhost"}
    runs: list[dict] = []
    with contextlib.ExitStack() as stack:
        _progress("import times (%d runs each)", args.import_runs)
        imports = _measure_imports(args.import_runs)

        from devhost.store import MemoryStore, TableStore

        for length in CHAINS:
            runs.append(_measure_chains("memory", lambda hub: MemoryStore(), args.memory_jobs, length,
                                        args.warmup_jobs, 0.1, "memory" in args.profile and length == 3))

        _progress("starting Azurite")
        azurite = _start_azurite(stack)
        connection = azurite.connection_string
        os.environ["AzureWebJobsStorage"] = connection  # the app's settings (health probe) read it
        for length in CHAINS:
            runs.append(_measure_chains("azurite", lambda hub: TableStore(connection, hub), args.azurite_jobs,
                                        length, args.warmup_jobs, 0.2, "azurite" in args.profile and length == 3))
        latency = _measure_latency(connection, args.requests, args.warmup_requests, args.paced_requests,
                                   args.paced_rate, "selftest" in args.profile)
        stack.close()  # Azurite stops here, so that it does not share the CPUs with the Celery run

        celery = _measure_celery(stack, args.azurite_jobs, config.max_activities, args.celery_pool,
                                 args.celery_rounds, args.warmup_jobs)

    wall = time.perf_counter() - bench_started
    busy_after = busy_cpu_s()
    # The share of the machine's CPUs that other processes used while the bench ran: above ~0.1, the figures
    # are low because a neighbour (a test run, say) competed for the same cores.
    others = (None if busy_before is None or busy_after is None else
              round(max(0.0, (busy_after - busy_before) - (own_cpu_s() - own_before)) / (wall * os.cpu_count()), 3))
    per_s = {b: {str(r["chain"]): r["jobs_per_s"] for r in runs if r["backend"] == b} for b in ("memory", "azurite")}
    ratio = {b: round(per_s[b]["3"] / celery["jobs_per_s"], 3) for b in per_s}
    report.update({
        "orchestrations_per_s": per_s,
        "selftest_ack_ms": latency["selftest"],
        "selftest_ack_paced_ms": latency["selftest_paced"],
        "health_ms": latency["health"],
        "import_ms": imports,
        "celery_redis_3_step_per_s": celery["jobs_per_s"],
        "celery": {"pool": args.celery_pool, "concurrency": config.max_activities, "jobs": celery["jobs"],
                   "rounds_per_s": celery["rounds"]},
        "ratio_vs_celery": ratio,
        "aims": {
            "selftest_ack_p99_under_30ms": {"value": latency["selftest"]["p99"],
                                            "met": latency["selftest"]["p99"] < AIMS["selftest_ack_p99_ms_max"]},
            "memory_3_step_at_least_100_per_s": {"value": per_s["memory"]["3"],
                                                 "met": per_s["memory"]["3"] >= AIMS["memory_3_step_per_s_min"]},
            "azurite_3_step_at_least_25_per_s": {"value": per_s["azurite"]["3"],
                                                 "met": per_s["azurite"]["3"] >= AIMS["azurite_3_step_per_s_min"]},
            "import_overhead_under_300ms": {"value": imports["overhead"],
                                            "met": imports["overhead"] < AIMS["import_overhead_ms_max"]},
        },
        "runs": runs,
        "config": {"memory_jobs": args.memory_jobs, "azurite_jobs": args.azurite_jobs,
                   "latency_requests": args.requests, "max_activities": config.max_activities,
                   "max_orchestrators": config.max_orchestrators, "cpus": os.cpu_count(),
                   "loadavg_1m_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
                   "other_processes_cpu_share": others,
                   "python": platform.python_version()},
        "bench_seconds": round(wall, 1),
    })
    report["aims"]["all_met"] = all(a["met"] for a in report["aims"].values())
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
