"""Cutting a recording for parallel transcription: chunks per lane, the probe made at the door, a changed blob."""
from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np
import pytest

from shared.calls.audio import decode_mono_16k, probe
from shared.calls.service import chunk_audio

CALL = Path(__file__).resolve().parents[3].parent / "shared" / "fixtures" / "calls" / "sales_call_en"


def _repeated(seconds: int) -> bytes:
    samples = decode_mono_16k((CALL / "call.wav").read_bytes())
    repeated = np.tile(samples, int(np.ceil(seconds * 16000 / samples.shape[0])))[:seconds * 16000]
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes((repeated * 32768).clip(-32768, 32767).astype("<i2").tobytes())
    return buffer.getvalue()


@pytest.fixture(scope="module")
def ten_minutes() -> bytes:
    return _repeated(600)


def test_ten_minutes_on_eight_lanes_become_eight_wav_chunks_that_tile_the_call(ten_minutes):
    info, chunks = chunk_audio(ten_minutes, max_duration_s=3600, max_chunk_s=600, lanes=8)
    assert info["duration_s"] == pytest.approx(600, abs=0.1) and len(chunks) == 8
    assert chunks[0][0] == 0 and chunks[-1][1] == pytest.approx(600, abs=0.01)
    assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:]))
    assert all(75 * 0.75 <= end - start <= 75 * 1.25 for start, end, _ in chunks)  # a cut moves an eighth at most
    assert [probe(data).duration_s for _, _, data in chunks] == pytest.approx([e - s for s, e, _ in chunks], abs=0.01)


def test_one_lane_keeps_the_call_in_as_few_chunks_as_the_limit_allows(ten_minutes):
    assert len(chunk_audio(ten_minutes, max_duration_s=3600, max_chunk_s=600, lanes=1)[1]) == 1
    assert len(chunk_audio(ten_minutes, max_duration_s=3600, max_chunk_s=240, lanes=1)[1]) == 3
