"""Probing, decoding, chunking and encoding call recordings, on the fixture and on broken files made here."""
from __future__ import annotations

import io
import struct
import wave
from itertools import pairwise
from pathlib import Path

import av
import numpy as np
import pytest

from shared.calls.audio import (AudioInfo, chunk_count, chunk_samples, decode_channels_16k, decode_mono_16k,
                                encode_chunk, probe, split_at_silences)
from shared.errors import Unprocessable

CALL = Path(__file__).resolve().parents[3].parent / "shared" / "fixtures" / "calls" / "sales_call_en"
CALL_SECONDS = 43.54  # call.wav: 696,679 samples at 16 kHz


def _read(name: str) -> bytes:
    return (CALL / name).read_bytes()


def _wav(samples: np.ndarray, rate: int) -> bytes:
    """PCM 16-bit WAV; `samples` shaped (n,) or (channels, n)."""
    frames = np.atleast_2d(samples)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(frames.shape[0])
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((np.clip(frames.T, -1, 1) * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


def _wav_with_format_tag(tag: int, samples: int = 16000) -> bytes:
    data = bytes(2 * samples)
    fmt = struct.pack("<HHIIHH", tag, 1, 16000, 32000, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _video_only() -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="matroska") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for _ in range(5):
            frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buffer.getvalue()


def _code(data: bytes, **kwargs) -> str:
    with pytest.raises(Unprocessable) as caught:
        probe(data, **kwargs)
    assert caught.value.status == 422
    return caught.value.code


@pytest.fixture(scope="module")
def call_samples() -> np.ndarray:
    return decode_mono_16k(_read("call.wav"))


@pytest.mark.parametrize("name, container, codec, rate", [
    ("call.wav", "wav", "pcm_s16le", 16000),
    ("call.mp3", "mp3", "mp3", 16000),
    ("voice-note.ogg", "ogg", "opus", 48000),
])
def test_fixture_recordings_probe_with_container_codec_and_call_length(name, container, codec, rate):
    info = probe(_read(name))
    assert isinstance(info, AudioInfo)
    assert (info.container, info.codec, info.channels, info.sample_rate) == (container, codec, 1, rate)
    assert abs(info.duration_s - CALL_SECONDS) < 0.2
    assert info.size_bytes == len(_read(name))


@pytest.mark.parametrize("name", ["call.wav", "call.mp3", "voice-note.ogg"])
def test_every_fixture_format_decodes_to_the_whole_call_as_16k_mono_float(name):
    samples = decode_mono_16k(_read(name))
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(samples.shape[0] / 16000 - CALL_SECONDS) < 0.1
    assert np.abs(samples).max() <= 1.0
    assert np.sqrt(np.mean(samples ** 2)) > 0.01  # speech, not silence


@pytest.mark.parametrize("name", ["call.wav", "call.mp3", "voice-note.ogg"])
def test_decoding_without_the_resampler_gives_what_the_resampler_gives(name):
    with av.open(io.BytesIO(_read(name))) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=16000)
        parts = [out.to_ndarray().reshape(-1) for frame in container.decode(audio=0)
                 for out in resampler.resample(frame)]
        parts += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    assert np.array_equal(decode_mono_16k(_read(name)), np.concatenate(parts))


@pytest.mark.parametrize("sample_format, dtype, codec, scale", [("s16", "<i2", "pcm_s16le", 32767),
                                                                 ("s32", "<i4", "pcm_s32le", 2 ** 31 - 1),
                                                                 ("flt", "<f4", "pcm_f32le", 1.0),
                                                                 ("dbl", "<f8", "pcm_f64le", 1.0)])
def test_mono_at_16k_in_any_sample_format_decodes_to_the_same_floats(sample_format, dtype, codec, scale):
    tone = 0.5 * np.sin(2 * np.pi * 300 * np.arange(16000) / 16000)
    frame = av.AudioFrame.from_ndarray((tone * scale).astype(dtype).reshape(1, -1), format=sample_format,
                                       layout="mono")
    frame.sample_rate = 16000
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="wav") as out:
        stream = out.add_stream(codec, rate=16000, layout="mono")
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    decoded = decode_mono_16k(buffer.getvalue())
    assert decoded.shape == (16000,) and np.allclose(decoded, tone, atol=1e-4)


def test_stereo_decodes_per_channel_and_mixes_to_mono():
    t = np.arange(8000) / 8000
    left, right = 0.5 * np.sin(2 * np.pi * 440 * t), np.zeros_like(t)
    data = _wav(np.stack([left, right]), 8000)
    channels = decode_channels_16k(data)
    assert channels.shape[0] == 2 and abs(channels.shape[1] - 16000) <= 32  # resampled from 8 kHz
    left_rms, right_rms = np.sqrt(np.mean(channels ** 2, axis=1))
    assert left_rms > 0.3 and right_rms < 0.001
    mono = decode_mono_16k(data)
    assert mono.ndim == 1 and 0.05 < np.sqrt(np.mean(mono ** 2)) < left_rms


def test_empty_upload_is_reported_as_empty():
    assert _code(b"") == "audio_empty"


def test_wav_without_samples_is_reported_as_empty():
    assert _code(_wav(np.zeros(0), 16000)) == "audio_empty"


@pytest.mark.parametrize("data", [np.random.default_rng(0).bytes(20_000), b"just some text, not a recording\n" * 50,
                                  b"%PDF-1.7\n" + bytes(2000)], ids=["random", "text", "pdf"])
def test_bytes_that_are_not_audio_are_reported_as_not_audio(data):
    assert _code(data) == "not_audio"


def test_video_without_sound_is_reported_as_not_audio():
    with pytest.raises(Unprocessable) as caught:
        probe(_video_only())
    assert caught.value.code == "not_audio"
    assert caught.value.details[0]["streams"] == ["video"]


def test_truncated_wav_is_reported_as_corrupt_with_declared_and_found_length():
    wav = _read("call.wav")
    with pytest.raises(Unprocessable) as caught:
        probe(wav[: len(wav) // 2])
    assert caught.value.code == "audio_corrupt"
    assert abs(caught.value.details[0]["declared_s"] - CALL_SECONDS) < 0.1
    assert abs(caught.value.details[0]["found_s"] - CALL_SECONDS / 2) < 0.2


def test_wav_cut_right_after_its_header_is_corrupt_not_empty():
    assert _code(_read("call.wav")[:44]) == "audio_corrupt"


def test_truncated_mp3_is_reported_as_corrupt():
    mp3 = _read("call.mp3")
    assert _code(mp3[: len(mp3) // 2]) == "audio_corrupt"


def test_a_whole_mp3_with_bytes_after_its_last_frame_is_not_mistaken_for_truncated():
    mp3 = _read("call.mp3")  # its Info header states 1,212 frames: FFmpeg guesses the length from the size instead
    for tail in (b"\x00" * 50_000, b"TAG" + b"x" * 125, b"\xff" * 4096):
        assert abs(probe(mp3 + tail).duration_s - probe(mp3).duration_s) < 0.1


def _encode(samples: np.ndarray, fmt: str, codec: str, bit_rate: int, target=None, **options: str) -> bytes:
    target = target or io.BytesIO()
    with av.open(target, "w", format=fmt, options=options) as out:
        stream = out.add_stream(codec, rate=16000, layout="mono")
        stream.bit_rate = bit_rate
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = 16000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return target.getvalue() if isinstance(target, io.BytesIO) else Path(target).read_bytes()


def test_truncated_m4a_is_reported_as_corrupt_whether_its_index_comes_last_or_first(call_samples, tmp_path):
    index_last = _encode(call_samples, "mp4", "aac", 32000)
    index_first = _encode(call_samples, "mp4", "aac", 32000, str(tmp_path / "call.m4a"), movflags="faststart")
    for m4a in (index_last, index_first):
        assert abs(probe(m4a).duration_s - CALL_SECONDS) < 0.2
        assert _code(m4a[: len(m4a) // 2]) == "audio_corrupt"


def test_mp3_whose_length_is_only_estimated_is_not_mistaken_for_truncated(call_samples):
    # no Xing header and the bit rate changes: FFmpeg's size-over-bit-rate guess is far off, the file is whole
    no_header = {"write_xing": "0", "id3v2_version": "0"}
    data = (_encode(call_samples[:20 * 16000], "mp3", "libmp3lame", 32000, **no_header)
            + _encode(call_samples[20 * 16000:], "mp3", "libmp3lame", 128000, **no_header))
    with av.open(io.BytesIO(data)) as container:
        assert container.duration / av.time_base > 2 * CALL_SECONDS  # the guess
    assert abs(probe(data).duration_s - CALL_SECONDS) < 0.3


def test_audio_file_with_a_damaged_header_is_corrupt_rather_than_not_audio():
    assert _code(_read("call.wav")[:30]) == "audio_corrupt"
    assert _code(_read("voice-note.ogg")[:200]) == "audio_corrupt"


def test_codec_without_a_decoder_is_reported_as_unsupported():
    assert _code(_wav_with_format_tag(0x1234)) == "audio_codec_unsupported"
    with pytest.raises(Unprocessable) as caught:
        decode_mono_16k(_wav_with_format_tag(0x1234))
    assert caught.value.code == "audio_codec_unsupported"


def test_recording_longer_than_the_configured_maximum_is_too_long():
    with pytest.raises(Unprocessable) as caught:
        probe(_read("call.mp3"), max_duration_s=30)
    assert caught.value.code == "audio_too_long"
    assert caught.value.details[0]["max_duration_s"] == 30
    assert probe(_read("call.mp3"), max_duration_s=60).duration_s > 30


def test_two_hour_call_splits_into_even_rounds_under_the_limit_that_tile_it_exactly(call_samples):
    repeats = int(np.ceil(7200 * 16000 / call_samples.shape[0]))
    samples = np.tile(call_samples, repeats)
    duration = samples.shape[0] / 16000
    count = chunk_count(duration, 600, lanes=8)
    chunks = split_at_silences(samples, 16000, count, max_chunk_s=600, min_silence_s=0.5)
    lengths = [end - start for start, end in chunks]
    assert duration >= 7200 and count == len(chunks) == 16  # 14 chunks are needed: two whole rounds of 8
    assert max(lengths) <= 600 and max(lengths) - min(lengths) <= 2 * 20  # about even: no lane waits on a long one
    assert chunks[0][0] == 0.0 and chunks[-1][1] == duration
    assert all(a[1] == b[0] for a, b in pairwise(chunks))  # no gap, no overlap
    assert sum(chunk_samples(samples, 16000, s, e).shape[0] for s, e in chunks) == samples.shape[0]
    # every cut lies in a pause: the half second around it is far quieter than the speech
    speech = np.mean(call_samples ** 2)
    for _, cut in chunks[:-1]:
        around = samples[int(cut * 16000) - 4000:int(cut * 16000) + 4000]
        assert np.mean(around ** 2) < 0.05 * speech


@pytest.mark.parametrize("duration, lanes, count", [
    (44, 8, 1),  # shorter than a minute: one chunk
    (5 * 60, 8, 5),  # short call: spread over lanes, a minute a chunk at least
    (60 * 60, 8, 8),  # 7 chunks of 10 minutes needed (a tenth spare): one round of 8
    (60 * 60, 1, 7),  # one lane: as few chunks as fit under the limit
    (600, 1, 1),  # exactly the limit
    (2 * 3600, 8, 16),
])
def test_chunk_count_keeps_lanes_busy_and_chunks_under_the_limit(duration, lanes, count):
    assert chunk_count(duration, 600, lanes) == count
    assert duration / count <= 600


def test_cut_goes_into_the_pause_nearest_its_even_position_not_into_words():
    rate, rng = 16000, np.random.default_rng(1)
    samples = (0.3 * rng.standard_normal(30 * rate)).astype(np.float32)
    samples[int(6.0 * rate):int(6.6 * rate)] = 0  # a pause, but far from the even position (10 s)
    samples[int(10.8 * rate):int(11.5 * rate)] = 0  # the pause nearest it
    samples[int(9.9 * rate):int(10.1 * rate)] = 0  # too short to count as a pause
    samples[int(19.0 * rate):int(19.6 * rate)] = 0  # near the second even position (20 s)
    samples[int(21.0 * rate):int(21.6 * rate)] = 0  # as quiet, but farther
    chunks = split_at_silences(samples, rate, 3, max_chunk_s=15, min_silence_s=0.5)
    assert 10.8 <= chunks[0][1] <= 11.5
    assert 19.0 <= chunks[1][1] <= 19.6


def test_audio_without_pauses_is_still_cut_evenly_within_the_limit():
    rate = 16000
    samples = (0.3 * np.random.default_rng(2).standard_normal(65 * rate)).astype(np.float32)
    chunks = split_at_silences(samples, rate, 7, max_chunk_s=10, min_silence_s=0.5)
    assert len(chunks) == 7 and all(end - start <= 10 for start, end in chunks)
    assert chunks[0][0] == 0 and chunks[-1][1] == 65


def test_too_few_chunks_for_the_limit_is_refused(call_samples):
    with pytest.raises(ValueError):
        split_at_silences(call_samples, 16000, 1, max_chunk_s=30)


def test_call_of_one_chunk_is_itself_and_silence_none(call_samples):
    assert split_at_silences(call_samples, 16000, 1, max_chunk_s=600) == [(0.0, call_samples.shape[0] / 16000)]
    assert split_at_silences(np.zeros(0, np.float32), 16000, 1) == []


@pytest.mark.parametrize("fmt, container", [("wav", "wav"), ("flac", "flac"), ("mp3", "mp3"), ("ogg", "ogg")])
def test_encoded_chunk_is_a_file_of_the_same_length_that_probes(call_samples, fmt, container):
    chunk = call_samples[: 20 * 16000]
    data = encode_chunk(chunk, 16000, fmt)
    info = probe(data)
    assert info.container == container and info.channels == 1
    assert abs(info.duration_s - 20.0) < 0.15
    assert len(data) <= 20 * 16000 * 2 + 100  # never bigger than raw 16-bit PCM


def test_wav_chunk_round_trips_to_the_same_samples(call_samples):
    chunk = call_samples[16000:32000]
    again = decode_mono_16k(encode_chunk(chunk, 16000))
    assert again.shape == chunk.shape
    assert np.max(np.abs(again - chunk)) < 2 / 32767


def test_ten_minute_wav_chunk_stays_under_the_25_mb_upload_limit():
    data = encode_chunk(np.zeros(600 * 16000, np.float32), 16000, "wav")
    assert 19_000_000 < len(data) < 25 * 1024 * 1024


def _mp3(rate: int, layout: str, seconds: float) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp3") as out:
        stream = out.add_stream("libmp3lame", rate=rate, layout=layout)
        tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(rate * seconds)) / rate)).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(np.tile(tone, (1 if layout == "mono" else 2, 1)), format="fltp",
                                           layout=layout)
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return buffer.getvalue()


def test_a_stream_that_changes_rate_and_layout_midway_decodes_whole():
    joined = _mp3(16000, "mono", 3) + _mp3(44100, "stereo", 3) + _mp3(16000, "mono", 3)  # recorder restarts
    assert abs(decode_mono_16k(joined).shape[0] / 16000 - 9) < 0.3
    assert decode_channels_16k(joined).shape[0] == 1


def test_mono_16k_recordings_skip_the_resampler(monkeypatch):
    class NoResampler:
        def __init__(self, *args, **kwargs) -> None:
            pass

        def resample(self, frame):
            raise AssertionError("the resampler was used")

    monkeypatch.setattr(av, "AudioResampler", NoResampler)
    assert abs(decode_mono_16k(_read("call.wav")).shape[0] / 16000 - CALL_SECONDS) < 0.1


def test_more_chunks_than_samples_still_tile():
    chunks = split_at_silences(np.ones(3, np.float32), 16000, 5, max_chunk_s=1)
    assert chunks[0][0] == 0 and chunks[-1][1] == 3 / 16000 and all(a[1] == b[0] < b[1] for a, b in pairwise(chunks))
