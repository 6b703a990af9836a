"""Call analysis on devhost + Azurite: 60 min of audio with chunk parallelism 1 against 8 (each on a host warmed by
one short call) with the default models, cost, offline WER."""
from __future__ import annotations

import io
import json
import sys
import time
import urllib.request
import wave
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared.calls.cost import transcription_estimate  # noqa: E402
from tests.support.fake_openai import FakeOpenAI  # noqa: E402
from tests.support.http import Http, wait_until  # noqa: E402
from tests.support.processes import FUNCTION_KEY, Azurite, DevhostProcess, free_port  # noqa: E402

FIXTURE = ROOT.parent / "shared" / "fixtures" / "calls" / "sales_call_en"
# The fake transcription service works at a fixed speed: REAL_TIME_FACTOR seconds of audio per second, after
# REQUEST_SECONDS per request. Reports on whisper-1 give 2-10x real time ("a 10-minute clip might take 60+
# seconds"); 30x is faster than that, which makes parallel chunks look less good, not better. The default
# gpt-4o-mini-transcribe answers text without times, so each chunk is sent as pieces of up to 30 s, one after
# another. The fake reports no tokens for them: they are priced at the published estimate per minute.
REAL_TIME_FACTOR = 30.0
REQUEST_SECONDS = 0.5
MODEL_SECONDS = 1.0  # each chat-model request (speaker labels, analysis)
# chat-model tokens as a real model would bill them: the prompt at 4 characters a token; the answer a full analysis,
# or a speaker turn (about 12 tokens) at every line, more than a two-party call has
CHARS_PER_TOKEN = 4
ANALYSIS_TOKENS = 2000
TURN_TOKENS = 12
CHUNK_SECONDS = 600  # the default CALL_CHUNK_SECONDS
MINUTES = 60


def log(*args: object) -> None:
    print(*args, file=sys.stderr, flush=True)


def audio_of(minutes: int) -> bytes:
    """The fixture call repeated to `minutes`, as 16 kHz mono WAV."""
    import numpy as np

    from shared.calls.audio import decode_mono_16k, to_pcm16

    samples = decode_mono_16k((FIXTURE / "call.wav").read_bytes())
    repeated = np.tile(samples, int(np.ceil(minutes * 60 * 16000 / len(samples))))[: minutes * 60 * 16000]
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(to_pcm16(repeated))
    return buffer.getvalue()


def service_seconds(form: dict) -> float:
    """How long the fake service takes for a chunk, from its length (16 kHz mono 16-bit WAV in the form)."""
    return REQUEST_SECONDS + max(1.0, (form["audio_bytes"] - 44) / 32000) / REAL_TIME_FACTOR


def chunk_answer(form: dict) -> list[dict]:
    """Segments covering the uploaded chunk (so that the recorded audio seconds are the chunk's length), after the
    time a service of fixed speed takes for it."""
    time.sleep(service_seconds(form))
    seconds = max(1.0, (form["audio_bytes"] - 44) / 32000)
    return [{"start": 0.0, "end": seconds / 2, "text": "we pay forty nine dollars per agent per month"},
            {"start": seconds / 2, "end": seconds, "text": "send the proposal for thirty agents"}]


def analysis_answer(body: dict) -> dict:
    time.sleep(MODEL_SECONDS)
    prompt = "".join(part["text"] if isinstance(part, dict) else str(part) for message in body["messages"]
                     for part in (message["content"] if isinstance(message["content"], list) else [message["content"]]))
    billed = {"prompt_tokens": len(prompt) // CHARS_PER_TOKEN}
    if body["response_format"]["json_schema"]["name"] == "SpeakerAssignment":
        return {"json": {"turns": []}, **billed, "completion_tokens": TURN_TOKENS * prompt.count("\n[")}
    return {"json": {"summary": "A sales call.", "next_steps": [{
        "text": "send proposal", "quote": "send the proposal for thirty agents", "timestamp": 1.0}]},
        **billed, "completion_tokens": ANALYSIS_TOKENS}


class TimedList(list):
    """The fake's request log with arrival times, to time the transcription phase alone."""

    def append(self, item: dict) -> None:
        super().append({**item, "at": time.perf_counter()})


def transcription_phase(fake: FakeOpenAI) -> float:
    """From the first chunk's arrival to the last chunk's answer."""
    chunks = [r for r in fake.requests if r["path"].endswith("/audio/transcriptions")]
    return max(r["at"] + service_seconds(r["body"]) for r in chunks) - min(r["at"] for r in chunks)


def finished(http: Http, job: dict) -> dict:
    return wait_until(lambda: (j := http.request("GET", f"/api/calls/{job['job_id']}?wait=10")[2])["status"]
                      in ("done", "failed") and j, timeout=600, interval=0.2)


def run_call(azurite: Azurite, fake: FakeOpenAI, audio: bytes, parallelism: int) -> tuple[float, dict]:
    host = DevhostProcess(azurite.connection_string, {
        "DEVHOST_RPC_PORT": str(free_port()), "AI_PROVIDER": "openai", "OPENAI_BASE_URL": fake.base_url,
        "OPENAI_API_KEY": "sk-bench", "CALL_CHUNK_SECONDS": str(CHUNK_SECONDS),
        "CALL_CHUNK_PARALLELISM": str(parallelism), "DEVHOST_LOG_LEVEL": "WARNING", "LOG_LEVEL": "WARNING"}).start()
    try:
        http = Http(host.base_url, FUNCTION_KEY)
        # a warm worker, as a team uploading calls meets it: containers, connections and libraries made once
        warm = http.request("POST", "/api/calls/upload?filename=warm.wav", raw=(FIXTURE / "call.wav").read_bytes(),
                            headers={"content-type": "audio/wav"})[2]
        assert finished(http, warm)["status"] == "done"
        fake.requests = TimedList()
        grant = http.request("POST", "/api/calls/upload-url?filename=bench.wav")[2]
        upload = urllib.request.Request(grant["upload_url"], data=audio, method="PUT", headers=grant["headers"])
        urllib.request.urlopen(upload, timeout=300)
        started = time.perf_counter()
        job = http.request("POST", "/api/calls", {"blob": grant["blob"], "title": f"bench p{parallelism}"})[2]
        done = finished(http, job)
        seconds = time.perf_counter() - started
    finally:
        host.stop()
    assert done["status"] == "done", done["error"]
    return seconds, done


def offline_wer() -> dict:
    from shared.calls.audio import decode_mono_16k
    from shared.calls.offline import transcribe_offline
    from shared.calls.transcript import wer

    reference = " ".join(line.split(":", 1)[1] for line in (FIXTURE / "transcript.txt").read_text().splitlines()
                         if ":" in line)
    started = time.perf_counter()
    segments = transcribe_offline(decode_mono_16k((FIXTURE / "call.wav").read_bytes()))
    hypothesis = " ".join(s.text for s in segments)
    return {"wer": round(wer(reference, hypothesis), 3), "seconds": round(time.perf_counter() - started, 2),
            "audio_seconds": 44}


def main() -> None:
    audio = audio_of(MINUTES)
    azurite = Azurite().start()
    try:
        with FakeOpenAI() as fake:
            fake.transcription, fake.default = chunk_answer, analysis_answer
            log(f"{MINUTES} min of audio, {len(audio) // 1_000_000} MB; parallelism 1")
            serial_s, serial = run_call(azurite, fake, audio, 1)
            serial_phase = transcription_phase(fake)
            log("parallelism 8")
            parallel_s, parallel = run_call(azurite, fake, audio, 8)
            parallel_phase = transcription_phase(fake)
            requests = sum(1 for r in fake.requests if r["path"].endswith("/audio/transcriptions"))
    finally:
        azurite.stop()
    cost = parallel["result"]["cost"]
    transcribed = [u for u in cost["usage"]["calls"] if u["operation"] == "transcribe"]
    per_minute = cost["cost_per_audio_minute_usd"]
    transcribe_per_minute = cost["by_operation"].get("transcribe", 0) / MINUTES
    result = {
        "bench": "calls", "audio_minutes": MINUTES, "chunks": parallel["result"]["chunks"],
        "transcription_model": transcribed[0]["model"], "transcription_requests": requests,
        "fake_transcription": {"real_time_factor": REAL_TIME_FACTOR, "request_s": REQUEST_SECONDS,
                               "model_request_s": MODEL_SECONDS},
        "chunks_parallelism_1": serial["result"]["chunks"],
        "end_to_end_s": {"parallelism_1": round(serial_s, 2), "parallelism_8": round(parallel_s, 2)},
        "speedup": round(serial_s / parallel_s, 2),
        "transcription_phase_s": {"parallelism_1": round(serial_phase, 2), "parallelism_8": round(parallel_phase, 2)},
        "transcription_speedup": round(serial_phase / parallel_phase, 2),
        "fixed_s": {"parallelism_1": round(serial_s - serial_phase, 2),
                    "parallelism_8": round(parallel_s - parallel_phase, 2),
                    "note": "decode, cut and store the chunks, analysis, result: the same in both runs"},
        "cost": {"per_call_usd": cost["cost_usd"], "per_audio_minute_usd": per_minute,
                 "transcription_per_audio_minute_usd": round(transcribe_per_minute, 5),
                 "by_operation": cost["by_operation"],
                 "estimated_30_min_call_usd": round(per_minute * 30, 4) if per_minute else None,
                 "whisper_1_30_min_transcription_usd": transcription_estimate(1800, "whisper-1")},
        "offline_pocketsphinx": offline_wer(),
        "aims": {"speedup_at_least_5x": serial_s / parallel_s >= 5,
                 "transcription_speedup_at_least_5x": serial_phase / parallel_phase >= 5,
                 "cost_30_min_at_most_0_15_usd": (per_minute or 0) * 30 <= 0.15},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
