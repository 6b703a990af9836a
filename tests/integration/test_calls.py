"""Call analysis over real HTTP on devhost + Azurite: upload, chunked transcription, speakers, checked insights."""
from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.support.http import Http, wait_until
from tests.support.processes import FUNCTION_KEY, DevhostProcess, free_port

FIXTURE = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "calls" / "sales_call_en"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())
LINES = [line.split(":", 1) for line in (FIXTURE / "transcript.txt").read_text().splitlines() if line.strip()]
SEGMENTS = [{"start": i * 7.0, "end": i * 7.0 + 6.5, "text": text.strip()} for i, (_, text) in enumerate(LINES)]


def _quote(fragment: str) -> dict:
    index = next(i for i, (_, text) in enumerate(LINES) if fragment in text)
    return {"quote": fragment, "timestamp": SEGMENTS[index]["start"], "speaker": LINES[index][0]}


ANALYSIS = {
    "summary": "Brightdesk pitches its help desk to a customer unhappy with speed and price.",
    "participants": [{"name": "Tom", "role": "sales rep", "company": "Brightdesk", "speaker": "agent"},
                     {"name": None, "role": "customer", "company": None, "speaker": "customer"}],
    "entities": {"companies": [{"text": "Zendesk", **_quote("contract with Zendesk")}], "people": [],
                 "products": [], "dates": [],
                 "prices": [{"text": "49 USD per agent per month", "amount": 49, "currency": "USD",
                             "unit": "per agent per month", **_quote("forty nine dollars per agent per month")}]},
    "sentiment": {"label": "positive", "score": 0.3, "description": "cautiously positive",
                  **_quote("That sounds better")},
    "speaker_sentiment": [],
    "pain_points": [{"text": "slow ticket loading (10 s)", **_quote("Our agents wait ten seconds")},
                    {"text": "20% price increase", **_quote("the price went up twenty percent")}],
    "objections": [{"text": "existing contract until March", **_quote("signed a contract with Zendesk until March")},
                   {"text": "needs finance director approval", **_quote("need approval from our finance director")},
                   {"text": "an invented objection", "quote": "we never said this at all", "timestamp": 3.0,
                    "speaker": "customer"}],
    "competitors": [{"name": "Zendesk", **_quote("contract with Zendesk until March")}],
    "next_steps": [{"text": "send proposal for 30 agents", "owner": "agent", "due": None,
                    **_quote("send a proposal for thirty agents")},
                   {"text": "demo with Laura on Tuesday at 10", "owner": "agent", "due": "Tuesday at ten",
                    **_quote("Tuesday at ten works")}],
    "questions": [{"text": "How is the tool working?", "answered": True,
                   **_quote("How is the help desk tool working for your team?")}],
}


def model_answer(body: dict) -> dict:
    schema = body["response_format"]["json_schema"]["name"]
    if schema == "SpeakerAssignment":
        return {"json": {"turns": [{"index": i, "speaker": speaker} for i, (speaker, _) in enumerate(LINES)]}}
    return {"json": ANALYSIS}


@pytest.fixture(scope="module")
def api(azurite_module, fake):
    fake.transcription = SEGMENTS
    fake.default = model_answer
    host = DevhostProcess(azurite_module.connection_string, {
        "DEVHOST_RPC_PORT": str(free_port()), "AI_PROVIDER": "openai", "OPENAI_BASE_URL": fake.base_url,
        "OPENAI_API_KEY": "sk-fake", "AI_RETRY_BASE_SECONDS": "0.2", "CALL_MAX_DURATION_SECONDS": "600",
        "OPENAI_TRANSCRIPTION_MODEL": "whisper-1"}).start()  # the fixture's segments, timed by the model
    yield Http(host.base_url, FUNCTION_KEY)
    host.stop()


def finished(http: Http, call_id: str, timeout: float = 90) -> dict:
    def check():
        job = http.request("GET", f"/api/calls/{call_id}?wait=5")[2]
        return job if job["status"] in ("done", "failed") else None

    return wait_until(check, timeout=timeout, interval=0.2)


@pytest.mark.parametrize("name", ["call.wav", "call.mp3", "voice-note.ogg"])
def test_recordings_in_every_format_are_accepted(api, name):
    status, headers, job = api.request("POST", f"/api/calls/upload?filename={name}&title=t-{uuid.uuid4().hex[:6]}",
                                       raw=(FIXTURE / name).read_bytes(),
                                       headers={"content-type": "application/octet-stream"})
    assert status == 202 and headers["Location"] == f"/api/calls/{job['job_id']}", job
    assert finished(api, job["job_id"])["status"] == "done"


def test_call_gets_transcript_speakers_and_the_expected_insights(api, fake):
    fake.requests.clear()
    status, _, job = api.request("POST", "/api/calls/upload?title=Brightdesk%20demo",
                                 raw=(FIXTURE / "call.wav").read_bytes(), headers={"content-type": "audio/wav"})
    assert status == 202
    done = finished(api, job["job_id"])
    assert done["status"] == "done", done["error"]
    result, analysis = done["result"], done["result"]["analysis"]
    assert result["speakers"] == ["agent", "customer"] and len(result["speakers"]) == EXPECTED["speakers"]
    assert [c["name"] for c in analysis["competitors"]] == [EXPECTED["competitor"]]
    assert analysis["entities"]["prices"][0]["text"] == EXPECTED["price_quoted"]
    assert [p["text"] for p in analysis["pain_points"]] == EXPECTED["pain_points"]
    assert [o["text"] for o in analysis["objections"]] == EXPECTED["objections"]
    assert [n["text"] for n in analysis["next_steps"]] == EXPECTED["next_steps"]
    assert "thirty agents" in analysis["next_steps"][0]["quote"]  # seats: 30
    transcript = " ".join(text for _, text in LINES)
    for item in analysis["pain_points"] + analysis["objections"] + analysis["next_steps"]:
        assert item["quote"] in transcript and item["timestamp"] is not None
    assert [d["quote"] for d in result["dropped_insights"]] == ["we never said this at all"]
    assert result["cost"]["cost_usd"] > 0 and result["cost"]["by_operation"]["transcribe"] > 0
    assert done["transcript"][0]["speaker"] == "agent" and len(done["transcript"]) == len(LINES)
    transcribe = [r for r in fake.requests if r["path"].endswith("/audio/transcriptions")]
    assert len(transcribe) == 1 and transcribe[0]["body"]["model"] == "whisper-1"
    [analysis_call] = [r for r in fake.chat_requests()
                       if r["body"].get("response_format", {}).get("json_schema", {}).get("name") == "CallAnalysis"]
    # strict structured outputs refuse the `default` keyword, which pydantic writes for defaulted fields
    assert analysis_call["body"]["response_format"]["json_schema"]["strict"] is True
    assert '"default"' not in json.dumps(analysis_call["body"]["response_format"])


def test_transcript_formats_listing_and_delete(api):
    _, _, job = api.request("POST", "/api/calls/upload?title=Formats", raw=(FIXTURE / "call.wav").read_bytes(),
                            headers={"content-type": "audio/wav"})
    call_id = finished(api, job["job_id"])["job_id"]
    srt = api.request("GET", f"/api/calls/{call_id}/transcript?format=srt")[2].decode()
    assert srt.startswith("1\n00:00:00,000 --> ") and "forty nine dollars" in srt
    vtt = api.request("GET", f"/api/calls/{call_id}/transcript?format=vtt")[2].decode()
    assert vtt.startswith("WEBVTT")
    as_json = api.request("GET", f"/api/calls/{call_id}/transcript?format=json")[2]
    assert as_json["segments"][1]["speaker"] == "customer"
    assert api.request("GET", f"/api/calls/{call_id}/transcript?format=doc")[0] == 400
    listed = api.request("GET", "/api/calls?q=formats")[2]["calls"]
    assert [c["job_id"] for c in listed] == [call_id]
    assert api.request("DELETE", f"/api/calls/{call_id}")[0] == 204
    assert api.request("GET", f"/api/calls/{call_id}")[0] == 404
    assert api.request("GET", f"/api/calls/{call_id}/transcript")[0] == 404


def test_the_call_routes_see_no_other_kind_of_job(api):
    status, _, offer = api.request("POST", "/api/ingest", {"text": "1 chair 5 EUR"})
    assert status == 202, offer
    assert api.request("GET", f"/api/calls/{offer['job_id']}")[0] == 404
    assert api.request("DELETE", f"/api/calls/{offer['job_id']}")[0] == 404  # once purged the offer job
    assert api.request("GET", f"/api/jobs/{offer['job_id']}")[2]["job_id"] == offer["job_id"]


def _wav_header_only() -> bytes:
    wav = (FIXTURE / "call.wav").read_bytes()
    return wav[: len(wav) // 3]


def _wav_in_an_unknown_codec() -> bytes:
    """A WAV whose format tag names a codec FFmpeg has no decoder for."""
    import struct

    data = bytes(32000)
    fmt = struct.pack("<HHIIHH", 0x1234, 1, 16000, 32000, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


BAD = [("not audio", b"%PDF-1.4 definitely not audio", 422, "not_audio"),
       ("zero-length", b"", 400, "empty_request"),
       ("truncated", _wav_header_only(), 422, "audio_corrupt"),
       ("unsupported codec", _wav_in_an_unknown_codec(), 422, "audio_codec_unsupported")]


@pytest.mark.parametrize("name,data,status,code", BAD, ids=[b[0] for b in BAD])
def test_bad_recordings_are_4xx_and_start_no_job(api, name, data, status, code):
    before = len(api.request("GET", "/api/calls")[2]["calls"])
    got, _, answer = api.request("POST", "/api/calls/upload", raw=data,
                                 headers={"content-type": "application/octet-stream"})
    assert (got, answer["error"]["code"]) == (status, code), answer
    assert len(api.request("GET", "/api/calls")[2]["calls"]) == before


def test_recording_longer_than_the_maximum_is_refused(azurite_module):
    host = DevhostProcess(azurite_module.connection_string, {"DEVHOST_RPC_PORT": str(free_port()),
                                                             "AI_PROVIDER": "offline", "CALL_MAX_DURATION_SECONDS": "10"})
    host.start()
    try:
        status, _, answer = Http(host.base_url, FUNCTION_KEY).request(
            "POST", "/api/calls/upload", raw=(FIXTURE / "call.wav").read_bytes(), headers={"content-type": "audio/wav"})
        assert status == 422 and answer["error"]["code"] == "audio_too_long"
    finally:
        host.stop()


def test_large_recordings_go_straight_to_storage_through_an_upload_url(api):
    import urllib.request

    status, _, grant = api.request("POST", "/api/calls/upload-url?filename=big%20call.wav")
    assert status == 201 and grant["method"] == "PUT" and "sig=" in grant["upload_url"]
    request = urllib.request.Request(grant["upload_url"], data=(FIXTURE / "call.wav").read_bytes(), method="PUT",
                                     headers=grant["headers"])
    assert urllib.request.urlopen(request, timeout=30).status == 201
    status, _, job = api.request("POST", "/api/calls", {"blob": grant["blob"], "title": "Big call"})
    assert status == 202, job
    assert finished(api, job["job_id"])["status"] == "done"
    assert api.request("POST", "/api/calls", {"blob": "uploads/nothing/here.wav"})[0] == 404
    assert api.request("POST", "/api/calls", {"blob": "../etc/passwd"})[0] == 400


def test_search_finds_the_segment_of_an_analysed_call(azurite_module):
    host = DevhostProcess(azurite_module.connection_string, {"DEVHOST_RPC_PORT": str(free_port()),
                                                             "AI_PROVIDER": "offline"}).start()
    try:
        http = Http(host.base_url, FUNCTION_KEY)
        _, _, job = http.request("POST", "/api/calls/upload?title=Offline", raw=(FIXTURE / "call.wav").read_bytes(),
                                 headers={"content-type": "audio/wav"})
        done = finished(http, job["job_id"], timeout=120)
        assert done["status"] == "done", done["error"]
        assert len(done["transcript"]) >= 2
        words = done["transcript"][1]["text"].split()[:4]
        status, _, found = http.request("GET", "/api/calls/search?q=" + "%20".join(words))
        assert status == 200 and found["hits"][0]["call_id"] == job["job_id"]
        assert http.request("GET", "/api/calls/search")[0] == 400
    finally:
        host.stop()


def _repeated_call(seconds: int = 7200) -> bytes:
    """The fixture repeated to `seconds` (two hours: about 115 MB) as 8 kHz mono WAV: a real long upload."""
    import io
    import wave

    import av
    import numpy as np

    with av.open(str(FIXTURE / "call.wav")) as container:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=8000)
        pcm = b"".join(bytes(f.planes[0])[: f.samples * 2] for frame in container.decode(audio=0)
                       for f in resampler.resample(frame))
    samples = np.frombuffer(pcm, dtype=np.int16)
    repeated = np.tile(samples, int(np.ceil(seconds * 8000 / len(samples))))[: seconds * 8000]
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(repeated.tobytes())
    return buffer.getvalue()


def test_two_hour_recording_is_chunked_transcribed_in_parallel_and_stitched(azurite_module, fake):
    import urllib.request

    fake.transcription = lambda form: [{"start": 1.0, "end": 4.0, "text": "first words of this chunk"},
                                       {"start": 300.0, "end": 303.0, "text": "middle of this chunk"}]
    fake.default = model_answer
    host = DevhostProcess(azurite_module.connection_string, {
        "DEVHOST_RPC_PORT": str(free_port()), "AI_PROVIDER": "openai", "OPENAI_BASE_URL": fake.base_url,
        "OPENAI_API_KEY": "sk-fake", "CALL_CHUNK_SECONDS": "600", "OPENAI_TRANSCRIPTION_MODEL": "whisper-1"}).start()
    try:
        http = Http(host.base_url, FUNCTION_KEY)
        grant = http.request("POST", "/api/calls/upload-url?filename=long.wav")[2]
        upload = urllib.request.Request(grant["upload_url"], data=_repeated_call(), method="PUT",
                                        headers=grant["headers"])
        assert urllib.request.urlopen(upload, timeout=120).status == 201
        _, _, job = http.request("POST", "/api/calls", {"blob": grant["blob"], "title": "Two hours"})
        done = finished(http, job["job_id"], timeout=240)
    finally:
        host.stop()
        fake.transcription = SEGMENTS
    assert done["status"] == "done", done["error"]
    assert done["result"]["chunks"] >= 12 and abs(done["result"]["audio"]["duration_s"] - 7200) < 1
    starts = [s["start"] for s in done["transcript"]]
    assert starts == sorted(starts) and len(starts) == 2 * done["result"]["chunks"]
    assert starts[-1] > 6600  # the last chunk's words sit near the end of the call, not at its start


def _analysed_with_default_models(azurite, fake, audio: bytes) -> dict:
    """The finished job of `audio` uploaded to a devhost with the default models (the fake's transcription as set)."""
    fake.default = model_answer
    host = DevhostProcess(azurite.connection_string, {
        "DEVHOST_RPC_PORT": str(free_port()), "AI_PROVIDER": "openai", "OPENAI_BASE_URL": fake.base_url,
        "OPENAI_API_KEY": "sk-fake"}).start()
    try:
        http = Http(host.base_url, FUNCTION_KEY)
        _, _, job = http.request("POST", "/api/calls/upload?title=Default", raw=audio,
                                 headers={"content-type": "audio/wav"})
        done = finished(http, job["job_id"])
    finally:
        host.stop()
        fake.transcription, fake.transcription_usage = SEGMENTS, None
    assert done["status"] == "done", done["error"]
    return done


def test_the_default_model_hears_pieces_cut_at_pauses_and_is_priced_by_its_tokens(azurite_module, fake):
    """gpt-4o-mini-transcribe answers text without times: the call is heard in pieces of at most 30 s, and each
    piece's sentences are timed within it."""
    fake.requests.clear()
    fake.transcription = lambda form: [{"start": 0, "end": 0, "text": f"This piece has {form['audio_bytes']} "
                                                                       "bytes. It ends here."}]
    fake.transcription_usage = lambda form: (400, 15)
    done = _analysed_with_default_models(azurite_module, fake, (FIXTURE / "call.wav").read_bytes())
    heard = [r["body"] for r in fake.requests if r["path"].endswith("/audio/transcriptions")]
    assert len(heard) == 2 and {h["model"] for h in heard} == {"gpt-4o-mini-transcribe"}
    assert {h["response_format"] for h in heard} == {"json"}
    pieces = [(h["audio_bytes"], (h["audio_bytes"] - 44) / 32000) for h in heard]  # ~16 kHz 16-bit mono WAV
    assert all(seconds <= 30.5 for _, seconds in pieces)
    transcript = done["transcript"]
    assert [s["text"] for s in transcript][1::2] == ["It ends here."] * 2
    first_cut = transcript[2]["start"]
    assert 0 < transcript[1]["end"] <= first_cut < transcript[3]["end"] <= done["result"]["audio"]["duration_s"]
    cost = done["result"]["cost"]
    assert cost["by_operation"]["transcribe"] == pytest.approx(2 * (400 * 3.0 + 15 * 5.0) / 1e6)


def test_a_stereo_call_with_the_default_model_gets_its_speakers_from_the_channels(azurite_module, fake):
    """One party a channel: each sentence goes to the louder channel over its (estimated) time; no model labels."""
    import io
    import wave

    import numpy as np

    from shared.calls.audio import decode_mono_16k, to_pcm16

    call = decode_mono_16k((FIXTURE / "call.wav").read_bytes())[:40 * 16000]
    left, right = call.copy(), call.copy()
    left[20 * 16000:], right[:20 * 16000] = 0, 0  # the agent speaks first, the customer after 20 s
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(to_pcm16(np.stack([left, right]).T.reshape(-1)))
    fake.requests.clear()
    fake.transcription = lambda form: [{"start": 0, "end": 0, "text": "Words of this turn. More of them."}]
    done = _analysed_with_default_models(azurite_module, fake, buffer.getvalue())
    assert done["result"]["audio"]["channels"] == 2 and done["result"]["speakers"] == ["agent", "customer"]
    transcript = done["transcript"]
    assert transcript[0]["speaker"] == "agent" and transcript[-1]["speaker"] == "customer"
    asked = [r["body"]["response_format"]["json_schema"]["name"] for r in fake.chat_requests()]
    assert "SpeakerAssignment" not in asked and "CallAnalysis" in asked


def test_multipart_upload_carries_the_metadata(api):
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nQuarterly review\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"call.mp3\"\r\n"
            "Content-Type: audio/mpeg\r\n\r\n").encode() + (FIXTURE / "call.mp3").read_bytes() + \
        f"\r\n--{boundary}--\r\n".encode()
    status, _, job = api.request("POST", "/api/calls/upload", raw=body,
                                 headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert status == 202, job
    done = finished(api, job["job_id"])
    assert done["status"] == "done" and done["result"]["title"] == "Quarterly review"
    assert done["result"]["filename"] == "call.mp3"


def test_listing_filters_by_upload_date_and_pages_through_the_calls(api):
    ids = []
    for n in range(3):
        _, _, job = api.request("POST", f"/api/calls/upload?title=Paging-{n}", raw=(FIXTURE / "call.wav").read_bytes(),
                                headers={"content-type": "audio/wav"})
        ids.append(job["job_id"])
    for call_id in ids:
        finished(api, call_id)
    today = datetime.now(timezone.utc).date()
    first = api.request("GET", f"/api/calls?q=paging-&limit=2&from={today}")[2]
    assert len(first["calls"]) == 2 and first["continuation"]
    second = api.request("GET", f"/api/calls?q=paging-&limit=2&from={today}&continuation={first['continuation']}")[2]
    assert second["continuation"] is None
    assert sorted(c["job_id"] for c in first["calls"] + second["calls"]) == sorted(ids)
    assert first["calls"][0]["created_at"] >= first["calls"][1]["created_at"] >= second["calls"][0]["created_at"]
    yesterday = today - timedelta(days=1)
    assert api.request("GET", f"/api/calls?q=paging-&to={yesterday}")[2]["calls"] == []
    assert api.request("GET", f"/api/calls?q=paging-&from={yesterday}&to={today}")[2]["calls"]
    assert api.request("GET", "/api/calls?from=last-week")[0] == 400
    assert api.request("GET", "/api/calls?status=done&limit=0")[0] == 400


def test_kill_9_mid_call_finishes_after_restart_without_retranscribing_finished_chunks(azurite, fake):
    import urllib.request

    fake.requests.clear()
    fake.transcription = lambda form: [{"start": 2.0, "end": 5.0, "text": "words of this chunk"}]
    fake.default, fake.latency = model_answer, 1.0
    env = {"DEVHOST_RPC_PORT": str(free_port()), "AI_PROVIDER": "openai", "OPENAI_BASE_URL": fake.base_url,
           "OPENAI_API_KEY": "sk-fake", "CALL_CHUNK_SECONDS": "600", "CALL_CHUNK_PARALLELISM": "1",
           "OPENAI_TRANSCRIPTION_MODEL": "whisper-1"}  # one request per chunk
    first = DevhostProcess(azurite.connection_string, env).start()

    def transcriptions() -> list[str]:
        return [r["body"].get("audio_sha1") for r in fake.requests if r["path"].endswith("/audio/transcriptions")]

    try:
        http = Http(first.base_url, FUNCTION_KEY)
        grant = http.request("POST", "/api/calls/upload-url?filename=long.wav")[2]
        upload = urllib.request.Request(grant["upload_url"], data=_repeated_call(35 * 60), method="PUT",
                                        headers=grant["headers"])
        assert urllib.request.urlopen(upload, timeout=120).status == 201
        _, _, job = http.request("POST", "/api/calls", {"blob": grant["blob"], "title": "Killed"})
        wait_until(lambda: len(transcriptions()) >= 3, timeout=120, interval=0.05)  # two done, the third running
        first.kill()
    finally:
        first.stop()
    second = first.again(DEVHOST_HUB_WAIT_SECONDS="0").start()
    try:
        done = finished(Http(second.base_url, FUNCTION_KEY), job["job_id"], timeout=180)
    finally:
        second.stop()
        fake.transcription, fake.latency = SEGMENTS, 0.0
    assert done["status"] == "done", done["error"]
    chunks = done["result"]["chunks"]
    sent = transcriptions()
    assert chunks >= 4 and len(set(sent)) == chunks and None not in sent
    assert len(sent) - chunks <= 1, sent  # only the chunk in flight at the kill was sent again


def _upload_through_url(http: Http, filename: str, data: bytes) -> str:
    import urllib.request

    status, _, grant = http.request("POST", f"/api/calls/upload-url?filename={filename}")
    assert status == 201, grant
    request = urllib.request.Request(grant["upload_url"], data=data, method="PUT", headers=grant["headers"])
    assert urllib.request.urlopen(request, timeout=30).status == 201
    return grant["blob"]


def test_a_call_deleted_while_its_analysis_still_runs_leaves_nothing_behind(api, fake, azurite_module):
    """Cancel ends the job but not the activity under way: what it stores after the delete must not come back."""
    def analysis_requests() -> list[dict]:
        return [r for r in fake.chat_requests()
                if r["body"].get("response_format", {}).get("json_schema", {}).get("name") == "CallAnalysis"]

    blob = _upload_through_url(api, "deleted.wav", (FIXTURE / "call.wav").read_bytes())
    before = len(analysis_requests())
    fake.latency = 3.0
    try:
        status, _, job = api.request("POST", "/api/calls", {"blob": blob, "title": "Deleted"})
        assert status == 202, job
        call_id = job["job_id"]
        wait_until(lambda: len(analysis_requests()) > before, timeout=60, interval=0.1)
        assert api.request("POST", f"/api/jobs/{call_id}/cancel")[0] == 200
        assert api.request("DELETE", f"/api/calls/{call_id}")[0] == 204
        time.sleep(fake.latency + 3)  # the analysis answers, its activity stores the result, sees the mark
    finally:
        fake.latency = 0.0
    assert azurite_module.blob_names("calls", f"{call_id}/") == []
    assert azurite_module.blob_names("calls", blob.rsplit("/", 1)[0]) == []  # the uploaded recording, too
    assert api.request("GET", f"/api/calls/{call_id}/transcript")[0] == 404
    assert call_id not in {h["call_id"] for h in api.request("GET", "/api/calls/search?q=price&k=50")[2]["hits"]}


def test_an_upload_is_one_call_so_deleting_it_takes_no_recording_another_call_uses(api):
    blob = _upload_through_url(api, "shared.wav", (FIXTURE / "call.wav").read_bytes())
    status, _, first = api.request("POST", "/api/calls", {"blob": blob, "title": "First"})
    assert status == 202, first
    again = api.request("POST", "/api/calls", {"blob": blob, "title": "First"}, headers={"Idempotency-Key": "x"})
    assert again[0] in (200, 202) and again[2]["job_id"] == first["job_id"]
    other = api.request("POST", "/api/calls", {"blob": blob, "title": "Second"})
    assert other[0] == 409 and other[2]["error"]["code"] == "idempotency_key_reused"
    assert finished(api, first["job_id"])["status"] == "done"


def test_a_call_started_again_under_the_key_of_a_deleted_one_keeps_its_files(api, azurite_module):
    key = {"Idempotency-Key": f"again-{uuid.uuid4().hex}"}
    audio = (FIXTURE / "call.wav").read_bytes()
    for _ in range(2):
        status, _, job = api.request("POST", "/api/calls/upload?title=Again", raw=audio,
                                     headers={"content-type": "audio/wav", **key})
        assert status == 202, job
        assert finished(api, job["job_id"])["status"] == "done"
        assert api.request("GET", f"/api/calls/{job['job_id']}/transcript")[0] == 200
        assert api.request("DELETE", f"/api/jobs/{job['job_id']}")[0] == 204  # the jobs route deletes calls alike
        assert azurite_module.blob_names("calls", f"{job['job_id']}/") == []


def test_upload_names_that_are_no_file_names_still_give_a_blob_the_calls_route_takes(api):
    blob = _upload_through_url(api, "..", (FIXTURE / "call.wav").read_bytes())
    status, _, job = api.request("POST", "/api/calls", {"blob": blob, "title": "dots"})
    assert status == 202, job
    finished(api, job["job_id"])


def test_an_upload_named_result_json_is_not_searched(api):
    _upload_through_url(api, "result.json", b"\xff\xfe not json")
    _upload_through_url(api, "result.json", json.dumps({"segments": [{"start": 0, "end": 1, "text": "forged"}],
                                                       "vectors": [[1.0] * 1536]}).encode())
    status, _, found = api.request("GET", "/api/calls/search?q=forged&k=50")
    assert status == 200, found
    assert all(hit["call_id"] != "uploads" for hit in found["hits"])


@pytest.mark.parametrize("blob", ["uploads/./x.wav", "uploads//x.wav", "uploads/a/../x.wav", "calls/x.wav"])
def test_a_blob_name_not_given_by_upload_url_is_a_400(api, blob):
    status, _, answer = api.request("POST", "/api/calls", {"blob": blob})
    assert status == 400 and answer["error"]["code"] == "invalid_blob"
