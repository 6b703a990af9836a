"""Offer ingestion on devhost + Azurite with a fake model of fixed latency: ack latency, end-to-end, overhead, cost."""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.fake_openai import FakeOpenAI  # noqa: E402
from tests.support.http import Http  # noqa: E402
from tests.support.processes import FUNCTION_KEY, Azurite, DevhostProcess, free_port  # noqa: E402

FIXTURES = ROOT.parent / "shared" / "fixtures" / "offers"
MODEL_LATENCY = 0.3
ANSWER = {"is_offer": True, "supplier": "Paperline Supply", "currency": "USD", "total_net": 2520.0,
          "items": [{"description": "A4 copy paper 80gsm", "quantity": 80, "unit": "box", "unit_price": 31.5}]}


def log(*args: object) -> None:
    print(*args, file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))], 2)


def text_of_2kb(n: int) -> bytes:
    line = f"Offer {n}: 500 pcs stainless screws M8x40 at 0.38 EUR net, delivery 2-3 days. "
    return json.dumps({"text": (line * 40)[:2048], "source": "whatsapp"}).encode()


def pdf_of_1mb() -> bytes:
    """The fixture PDF with a megabyte of comments after %%EOF: valid, and as large as a scanned quote."""
    pdf = (FIXTURES / "email_en_pdf_attachment" / "Q-55120.pdf").read_bytes()
    return pdf + (b"\n%" + b"x" * 1022) * 1024


def ack_latencies(http: Http, bodies, content_type: str, rate: float | None = None) -> list[float]:
    """Ack times of POSTs one after another: each after the previous job finished (rate None, a quiet host,
    as one Make.com scenario sends), or at a fixed rate per second while earlier jobs still run."""
    times = []
    for n, body in enumerate(bodies):
        started = time.perf_counter()
        status, _, job = http.request("POST", "/api/ingest", raw=body, headers={"content-type": content_type})
        times.append((time.perf_counter() - started) * 1000)
        assert status == 202, job
        if rate is None:
            while job["status"] not in ("done", "failed"):
                job = http.request("GET", f"/api/result/{job['job_id']}?wait=25")[2]
        else:
            time.sleep(max(0.0, started + 1 / rate - time.perf_counter()))
    return times


def end_to_end(http: Http, jobs: int) -> tuple[list[float], list[dict]]:
    seconds, usages = [], []
    for n in range(jobs):
        started = time.perf_counter()
        _, _, job = http.request("POST", "/api/ingest", raw=text_of_2kb(10_000 + n),
                                 headers={"content-type": "application/json"})
        while job["status"] not in ("done", "failed"):
            _, _, job = http.request("GET", f"/api/result/{job['job_id']}?wait=25")
        seconds.append(time.perf_counter() - started)
        assert job["status"] == "done", job
        usages.append(job["usage"])
    return seconds, usages


def direct_model_calls(fake: FakeOpenAI, calls: int) -> list[float]:
    """The floor: the same model call made straight from this process with the openai SDK."""
    from openai import OpenAI

    client = OpenAI(api_key="bench", base_url=fake.base_url, max_retries=0)
    seconds = []
    for _ in range(calls):
        started = time.perf_counter()
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
        seconds.append(time.perf_counter() - started)
    return seconds


def main() -> None:
    azurite = Azurite().start()
    try:
        with FakeOpenAI() as fake:
            fake.default = {"json": ANSWER}
            host = DevhostProcess(azurite.connection_string, {
                "DEVHOST_RPC_PORT": str(free_port()), "AI_PROVIDER": "openai", "OPENAI_BASE_URL": fake.base_url,
                "OPENAI_API_KEY": "sk-bench", "DEVHOST_LOG_LEVEL": "WARNING", "LOG_LEVEL": "WARNING"}).start()
            try:
                http = Http(host.base_url, FUNCTION_KEY)
                log("warming up")  # first requests create containers and connections: not what we measure
                ack_latencies(http, [text_of_2kb(n) for n in range(20)], "application/json")
                ack_latencies(http, [pdf_of_1mb()] * 3, "application/pdf")
                log("ack latency, 2 KB text")
                text_ms = ack_latencies(http, [text_of_2kb(100 + n) for n in range(100)], "application/json")
                pdf = pdf_of_1mb()
                log(f"ack latency, {len(pdf) // 1024} KB PDF")
                pdf_ms = ack_latencies(http, [pdf] * 50, "application/pdf")
                log("ack latency at 10 requests/s while jobs run")
                loaded_ms = ack_latencies(http, [text_of_2kb(1000 + n) for n in range(100)], "application/json",
                                          rate=10)
                time.sleep(3)  # let the queued jobs drain before timing single jobs
                fake.latency = MODEL_LATENCY
                log("end to end with a 300 ms model")
                e2e, usages = end_to_end(http, 20)
                floor = direct_model_calls(fake, 20)
            finally:
                host.stop()
    finally:
        azurite.stop()
    model_s = statistics.median(floor)
    overhead = [s - model_s for s in e2e]
    result = {
        "bench": "offers",
        "ack_ms": {"text_2kb": {"p50": percentile(text_ms, 50), "p99": percentile(text_ms, 99), "n": len(text_ms)},
                   "pdf_1mb": {"p50": percentile(pdf_ms, 50), "p99": percentile(pdf_ms, 99), "n": len(pdf_ms)},
                   "text_2kb_at_10_per_s": {"p50": percentile(loaded_ms, 50), "p99": percentile(loaded_ms, 99),
                                            "n": len(loaded_ms)}},
        "end_to_end_s": {"p50": percentile(e2e, 50), "p99": percentile(e2e, 99), "n": len(e2e)},
        "model_call_s_direct": round(model_s, 3),
        "orchestration_overhead_s": {"p50": percentile(overhead, 50), "p99": percentile(overhead, 99)},
        "per_job": {"input_tokens": usages[0]["input_tokens"], "output_tokens": usages[0]["output_tokens"],
                    "cost_usd": usages[0]["cost_usd"], "model": usages[0]["calls"][0]["model"]},
        "aims": {"ack_p99_under_50ms": max(percentile(text_ms, 99), percentile(pdf_ms, 99)) < 50,
                 "overhead_under_500ms": percentile(overhead, 50) < 0.5},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
