"""Call recordings as audio: probe, decode to 16 kHz, split at silences and encode chunks for transcription (PyAV)."""
from __future__ import annotations

import io
import math
import struct
import wave
from typing import Literal

import av
import numpy as np
from pydantic import BaseModel, ConfigDict

from ..errors import Unprocessable

RATE = 16_000
MAX_DURATION_S = 4 * 3600.0  # a longer upload is almost surely not one call, and would not fit an activity
# A file that demuxes to less than its header declares lost its tail; a little slack for padding and rounding.
_TRUNCATION_SLACK_S = 0.5
_TRUNCATION_SLACK_RATIO = 0.02
_PROBE_DECODE_PACKETS = 16
# Containers whose header states the length; WAV does too, but FFmpeg trims it to the file, so it is checked apart.
_DURATION_IN_HEADER = {"flac", "mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "asf", "caf"}
ChunkFormat = Literal["wav", "flac", "mp3", "ogg"]


class AudioInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    container: str  # FFmpeg's demuxer name: wav, mp3, ogg, mov,mp4,m4a,3gp,3g2,mj2 ...
    codec: str  # FFmpeg's codec name: pcm_s16le, mp3, aac, opus ...
    duration_s: float
    channels: int
    sample_rate: int
    size_bytes: int


def _sniffed_audio(data: bytes) -> bool:
    """Whether the bytes start like an audio container, so a failure to open means damage, not the wrong kind.

    Only long signatures count: a bare MPEG frame sync (11 set bits) turns up in random bytes too often.
    """
    head = data[:16]
    return (head[:4] in (b"RIFF", b"RF64", b"OggS", b"fLaC", b"FORM", b".snd", b"caff", b"#!AM", b"\x1aE\xdf\xa3",
                         b"0&\xb2u") or head[:3] == b"ID3" or head[4:8] == b"ftyp")


def _wav_missing_seconds(data: bytes) -> float:
    """How much of a RIFF/WAVE `data` chunk is missing from the file, in seconds; 0 when whole or of unknown length.

    FFmpeg trims the declared size to what the file holds, so a cut-off WAV looks whole to it.
    """
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return 0.0
    pos, byte_rate = 12, 0
    while pos + 8 <= len(data):
        chunk_id, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        if chunk_id == b"fmt " and pos + 16 <= len(data):
            byte_rate = struct.unpack("<I", data[pos + 16:pos + 20])[0] if pos + 20 <= len(data) else 0
        if chunk_id == b"data":
            if size in (0, 0xFFFFFFFF) or not byte_rate:  # a streaming recorder never came back to fill it in
                return 0.0
            return max(0, size - (len(data) - pos - 8)) / byte_rate
        pos += 8 + size + (size & 1)
    return 0.0


def _header_states_duration(container: str, data: bytes) -> bool:
    """Whether the container's duration comes from a header (so a shorter file lost its end) rather than from an
    estimate such as file size over the first frame's bit rate, which a variable bit rate makes wrong."""
    if container == "mp3":
        return _mp3_frames(data) is not None
    return container in _DURATION_IN_HEADER


def _mp3_frames(data: bytes) -> int | None:
    """The frame count an MP3's Xing, Info or VBRI header states (None: it states none). FFmpeg may still guess the
    length from the file's size, which bytes after the last frame (padding, a tag) make too long."""
    start = 0
    if data[:3] == b"ID3" and len(data) >= 10:
        size = (data[6] & 0x7F) << 21 | (data[7] & 0x7F) << 14 | (data[8] & 0x7F) << 7 | (data[9] & 0x7F)
        start = 10 + size + (10 if data[5] & 0x10 else 0)
    first_frame = data[start:start + 200]
    for tag in (b"Xing", b"Info"):
        at = first_frame.find(tag)
        if at >= 0 and len(first_frame) >= at + 12 and int.from_bytes(first_frame[at + 4:at + 8], "big") & 1:
            return int.from_bytes(first_frame[at + 8:at + 12], "big")
    at = first_frame.find(b"VBRI")
    if at >= 0 and len(first_frame) >= at + 18:
        return int.from_bytes(first_frame[at + 14:at + 18], "big")
    return None


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


# The WAV demuxer hands out 4 KiB packets by default: 56,000 of them for an hour, each a trip through Python.
_DEMUXER_OPTIONS = {"max_size": str(1 << 16)}  # larger ones slow the opening probe down


def _open(data: bytes) -> av.container.InputContainer:
    try:
        return av.open(io.BytesIO(data), mode="r", options=_DEMUXER_OPTIONS)
    except av.FFmpegError:
        if _sniffed_audio(data):
            raise Unprocessable("The audio file is damaged: its header cannot be read.", code="audio_corrupt") from None
        raise Unprocessable("The file is not audio in a format we can read.", code="not_audio") from None


def _audio_stream(container: av.container.InputContainer) -> av.audio.stream.AudioStream:
    streams = list(container.streams.audio)
    if not streams:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise Unprocessable("The file has no audio stream.", code="not_audio",
                            details=[{"streams": kinds, "container": container.format.name}])
    stream = streams[0]
    if stream.codec_context is None:  # FFmpeg knows the container, but has no decoder for what is in it
        raise Unprocessable("The audio codec is not supported; convert the recording to MP3, WAV, M4A or OGG.",
                            code="audio_codec_unsupported", details=[{"container": container.format.name}])
    return stream


def _too_long(duration_s: float, max_duration_s: float) -> Unprocessable:
    return Unprocessable(f"The recording lasts {_clock(duration_s)}; the limit is {_clock(max_duration_s)}.",
                         code="audio_too_long",
                         details=[{"duration_s": round(duration_s, 3), "max_duration_s": max_duration_s}])


def probe(data: bytes, *, max_duration_s: float = MAX_DURATION_S) -> AudioInfo:
    """What the recording is, checked before any work: it opens, holds decodable audio, is whole and not too long.

    Demuxes every packet (no decoding beyond the first few) so that the duration is what the file holds, not what
    its header claims.
    """
    if not data:
        raise Unprocessable("The audio file is empty.", code="audio_empty")
    with _open(data) as container:
        stream = _audio_stream(container)
        codec = stream.codec_context
        declared = container.duration / av.time_base if container.duration else None
        if declared and declared > max_duration_s and _header_states_duration(container.format.name, data):
            raise _too_long(declared, max_duration_s)  # before reading hours of packets
        start, end, decoded, failures, packets, frame_s = None, 0.0, 0, 0, 0, None
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue  # the flush packet demux yields at the end
                packets += 1
                if packet.pts is not None and packet.time_base:
                    begin = float(packet.pts * packet.time_base)
                    start = begin if start is None else min(start, begin)
                    end = max(end, begin + float((packet.duration or 0) * packet.time_base))
                    frame_s = frame_s or float((packet.duration or 0) * packet.time_base)
                if packets <= _PROBE_DECODE_PACKETS:
                    try:
                        decoded += sum(frame.samples for frame in packet.decode())
                    except av.FFmpegError:
                        failures += 1
        except av.FFmpegError:
            raise Unprocessable("The audio file is damaged: it cannot be read to the end.",
                                code="audio_corrupt") from None
        if packets and failures and not decoded and failures >= min(packets, _PROBE_DECODE_PACKETS // 2):
            raise Unprocessable("The audio file is damaged: its audio cannot be decoded.", code="audio_corrupt")
        found = max(0.0, end - (start or 0.0))
        missing = _wav_missing_seconds(data)
        mp3_frames = _mp3_frames(data) if container.format.name == "mp3" else None
        if missing:
            declared = found + missing
        elif mp3_frames is not None and frame_s:
            declared = mp3_frames * frame_s  # what the header states, not FFmpeg's guess from the size
        elif not _header_states_duration(container.format.name, data):
            declared = None
        truncated = declared is not None and declared - found > max(_TRUNCATION_SLACK_S,
                                                                    _TRUNCATION_SLACK_RATIO * declared)
        if truncated:
            raise Unprocessable("The audio file is truncated: it ends before its header says it does.",
                                code="audio_corrupt",
                                details=[{"declared_s": round(declared or 0.0, 3), "found_s": round(found, 3)}])
        if packets == 0 or found <= 0:
            raise Unprocessable("The audio file holds no sound.", code="audio_empty")
        if found > max_duration_s:
            raise _too_long(found, max_duration_s)
        return AudioInfo(container=container.format.name, codec=codec.codec.canonical_name, duration_s=round(found, 3),
                         channels=codec.channels, sample_rate=codec.sample_rate, size_bytes=len(data))


# Sample formats FFmpeg hands a mono frame in, as numpy types with the scale its resampler applies to reach float.
_DIRECT = {"s16": ("<i2", 1 / 32768), "s16p": ("<i2", 1 / 32768), "s32": ("<i4", 1 / 2147483648),
           "s32p": ("<i4", 1 / 2147483648), "flt": ("<f4", 1.0), "fltp": ("<f4", 1.0), "dbl": ("<f8", 1.0),
           "dblp": ("<f8", 1.0)}


def _direct_format(frame: av.AudioFrame, rate: int) -> tuple[str, float] | None:
    """The numpy type and scale of a mono frame already at `rate`, whose samples need no resampler; None when it
    does. Most call recordings are 16 kHz mono, and a resampler call per frame costs more than the decoding."""
    if frame.sample_rate != rate or len(frame.layout.channels) != 1:
        return None
    return _DIRECT.get(frame.format.name)


def _joined(raw: list[memoryview], kind: tuple[str, float]) -> np.ndarray:
    """Raw sample buffers of one type as float32 (1, n), scaled exactly as the resampler would."""
    dtype, scale = kind
    samples = np.frombuffer(b"".join(raw), dtype=dtype).astype(np.float32)
    if scale != 1.0:
        samples *= np.float32(scale)
    return samples.reshape(1, -1)


def _decode(data: bytes, resampler_layout: str | None, rate: int, planar: bool) -> np.ndarray:
    if not data:
        raise Unprocessable("The audio file is empty.", code="audio_empty")
    with _open(data) as container:
        stream = _audio_stream(container)
        layout = resampler_layout or stream.codec_context.layout.name or (
            "mono" if stream.codec_context.channels == 1 else "stereo")  # a file that names no layout
        resampler = av.AudioResampler(format="fltp" if planar else "flt", layout=layout, rate=rate)
        parts: list[np.ndarray] = []
        raw: list[memoryview] = []  # samples taken as they are, joined and converted at once
        direct: tuple[str, float] | None = None
        failures = packets = 0
        resampled = False
        try:
            for packet in container.demux(stream):
                packets += 1
                try:
                    frames = packet.decode()
                except av.FFmpegError:
                    failures += 1  # a damaged packet costs a few milliseconds, not the call
                    continue
                for frame in frames:
                    kind = None if resampled else _direct_format(frame, rate)
                    if kind is not None and kind == (direct or kind):
                        direct = kind
                        raw.append(memoryview(frame.planes[0])[:frame.samples * np.dtype(kind[0]).itemsize])
                        continue
                    if raw:
                        parts.append(_joined(raw, direct))
                        raw = []
                    resampled = True  # from here on all through the resampler, which may hold samples back
                    frame.pts = None  # the resampler needs none, and broken timestamps make it complain
                    try:
                        resampled_frames = resampler.resample(frame)
                    except ValueError:  # the stream changed rate or layout midway: a new resampler from here
                        parts.extend(out.to_ndarray() for out in resampler.resample(None))
                        resampler = av.AudioResampler(format="fltp" if planar else "flt", layout=layout, rate=rate)
                        resampled_frames = resampler.resample(frame)
                    parts.extend(out.to_ndarray() for out in resampled_frames)
        except av.FFmpegError:
            raise Unprocessable("The audio file is damaged: it cannot be read to the end.",
                                code="audio_corrupt") from None
        if raw:
            parts.append(_joined(raw, direct))
        if resampled:
            parts.extend(out.to_ndarray() for out in resampler.resample(None))
    channels = 1 if resampler_layout == "mono" else max(1, stream.codec_context.channels)
    if not parts:
        if failures:
            raise Unprocessable("The audio file is damaged: its audio cannot be decoded.", code="audio_corrupt")
        raise Unprocessable("The audio file holds no sound.", code="audio_empty")
    if failures > max(3, packets // 10):
        raise Unprocessable(f"The audio file is damaged: {failures} of {packets} packets cannot be decoded.",
                            code="audio_corrupt")
    shaped = [p.reshape(channels, -1) if planar else p.reshape(-1) for p in parts]
    joined = shaped[0] if len(shaped) == 1 else np.concatenate(shaped, axis=-1)
    return joined.astype(np.float32, copy=False)


def decode_mono_16k(data: bytes, *, rate: int = RATE) -> np.ndarray:
    """The whole recording as mono float32 samples in [-1, 1] at `rate` (channels mixed down)."""
    return _decode(data, "mono", rate, planar=False)


def decode_channels_16k(data: bytes, *, rate: int = RATE) -> np.ndarray:
    """The recording as float32 samples shaped (channels, samples) at `rate`; stereo call recorders put one
    party on each channel, which is what labels speakers without a model."""
    return _decode(data, None, rate, planar=True)


def _window_energy(samples: np.ndarray, window: int) -> np.ndarray:
    """Mean square per window of `window` samples (the last one may be shorter), computed in blocks so that
    hours of audio need no second copy in memory."""
    frames = samples.shape[-1]
    count = -(-frames // window)
    energy = np.empty(count, dtype=np.float64)
    block = max(1, (1 << 20) // window) * window
    for offset in range(0, frames, block):
        part = np.asarray(samples[..., offset:offset + block], dtype=np.float32)
        if part.ndim == 2:
            part = part.mean(axis=0)
        whole = part.shape[0] // window * window
        first = offset // window
        shaped = part[:whole].reshape(-1, window)
        energy[first:first + shaped.shape[0]] = np.einsum("ij,ij->i", shaped, shaped) / window
        if whole < part.shape[0]:
            tail = part[whole:]
            energy[first + shaped.shape[0]] = float(np.dot(tail, tail)) / tail.shape[0]
    return energy


def is_silent(samples: np.ndarray, rate: int = RATE, *, window_s: float = 0.5, threshold_dbfs: float = -50.0) -> bool:
    """Whether no stretch of `window_s` is louder than `threshold_dbfs` (RMS; speech is about -30 to -15): nothing
    to transcribe, and a model sent silence tends to invent words."""
    if not samples.shape[-1]:
        return True
    loudest = float(_window_energy(samples, max(1, round(window_s * rate))).max())
    return loudest < 10 ** (threshold_dbfs / 10)  # mean square against the square of the RMS threshold


def chunk_count(duration_s: float, max_chunk_s: float, lanes: int = 1, min_chunk_s: float = 60.0) -> int:
    """How many chunks to cut a recording into for `lanes` transcriptions running at once.

    None over `max_chunk_s` (with a tenth to spare for moving cuts into pauses); a long call in whole rounds of
    `lanes`, so that no lane idles through the last round; a short one spread over the lanes, in chunks of at
    least `min_chunk_s` (shorter ones lose context at their edges for little gain).
    """
    if duration_s <= 0:
        return 0
    needed = 1 if duration_s <= max_chunk_s else math.ceil(duration_s / (0.9 * max_chunk_s))
    if needed >= lanes:
        return math.ceil(needed / lanes) * lanes
    return max(needed, min(lanes, int(duration_s // min_chunk_s)))


def split_at_silences(samples: np.ndarray, rate: int, count: int, max_chunk_s: float = 600.0,
                      min_silence_s: float = 0.5, *, window_s: float = 0.02) -> list[tuple[float, float]]:
    """`count` chunk boundaries (start, end) in seconds, of about equal length, that tile the whole recording.

    Each cut goes into the quietest stretch of `min_silence_s` (by RMS energy over `window_s` windows) near its
    even position, as near as may be among equally quiet ones, so that words are rarely cut in half; a cut moves
    at most an eighth of a chunk and 20 s (conversation pauses every few seconds; the lanes should finish
    together), and never so far that a chunk exceeds `max_chunk_s`.
    Consecutive chunks share their boundary: no audio is lost or transcribed twice.
    """
    if max_chunk_s <= 0 or window_s <= 0 or min_silence_s < 0 or count < 1:
        raise ValueError("count, max_chunk_s and window_s must be positive, min_silence_s not negative")
    if samples.ndim not in (1, 2):
        raise ValueError("samples must be shaped (n,) or (channels, n)")
    total = samples.shape[-1]
    if total == 0:
        return []
    count = min(count, total)  # a chunk holds one sample at least
    target = total / count
    if target > max_chunk_s * rate:
        raise ValueError(f"{count} chunks of at most {max_chunk_s} s cannot hold {total / rate:.1f} s")
    window = max(1, round(window_s * rate))
    reach = int(min(target / 8, 20.0 * rate, (max_chunk_s * rate - target) / 2 - window))  # how far a cut may move
    stretch = max(1, round(min_silence_s / window_s))
    energy = _window_energy(samples, window)
    # mean energy of the stretch starting at each window: quiet[j] = mean(energy[j:j + stretch])
    sums = np.concatenate([[0.0], np.cumsum(energy)])
    quiet = (sums[stretch:] - sums[:-stretch]) / stretch if len(energy) >= stretch else np.array([])
    cuts = [0]
    for k in range(1, count):
        ideal = round(k * target)
        lo = max((ideal - reach) // window, cuts[-1] // window + 1)
        hi = min((ideal + reach) // window - stretch // 2, len(quiet) - 1)  # a stretch is cut at its centre
        cut = ideal
        if reach >= window and hi >= lo and len(quiet):
            candidates = quiet[lo:hi + 1]
            quietest = np.flatnonzero(candidates <= candidates.min() * (1 + 1e-6) + 1e-12) + lo
            j = int(quietest[np.argmin(np.abs((quietest + stretch // 2) * window - ideal))])
            cut = (j + stretch // 2) * window
        cuts.append(max(cut, cuts[-1] + 1))
    cuts.append(total)
    return [(cuts[i] / rate, cuts[i + 1] / rate) for i in range(len(cuts) - 1)]


def chunk_samples(samples: np.ndarray, rate: int, start: float, end: float) -> np.ndarray:
    """The samples of one chunk from `split_at_silences`, without rounding gaps between neighbours."""
    return samples[..., round(start * rate):round(end * rate)]


def to_pcm16(samples: np.ndarray) -> bytes:
    """Float samples as little-endian 16-bit PCM, scaled by 32768 as FFmpeg scales the other way, so that decoded
    16-bit audio goes back to exactly the bytes it came from."""
    scaled = np.clip(np.rint(np.asarray(samples, dtype=np.float32) * 32768.0), -32768, 32767)
    return scaled.astype("<i2").tobytes()


def encode_chunk(samples: np.ndarray, rate: int = RATE, fmt: ChunkFormat = "wav") -> bytes:
    """Mono samples as a file the transcription API accepts: WAV (~1.9 MB a minute at 16 kHz), FLAC (about half),
    MP3 or OGG/Opus (small, lossy)."""
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim != 1:
        raise ValueError("encode_chunk takes mono samples shaped (n,)")
    if fmt == "wav":
        pcm = to_pcm16(samples)
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(rate)
            out.writeframes(pcm)
        return buffer.getvalue()
    codec, container_format = {"flac": ("flac", "flac"), "mp3": ("libmp3lame", "mp3"), "ogg": ("libopus", "ogg")}[fmt]
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container_format) as out:
        stream = out.add_stream(codec, rate=rate if fmt != "ogg" else 48_000, layout="mono")
        if fmt in ("mp3", "ogg"):
            stream.bit_rate = 32_000  # speech: plenty for recognition, ~240 KB a minute
        step = rate * 10
        for offset in range(0, samples.shape[0], step):
            frame = av.AudioFrame.from_ndarray(samples[offset:offset + step].reshape(1, -1), format="flt",
                                               layout="mono")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buffer.getvalue()
