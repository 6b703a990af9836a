"""The call pipeline's work: chunk the audio, transcribe a chunk, then stitch, label, analyse and check."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, Sequence

import numpy as np

from ..ai.port import AIProvider, Result, Segment
from ..ai.usage import Usage
from ..errors import AIError
from .audio import (RATE, channel_turns, chunk_count, chunk_samples, decode_channels_16k, decode_mono_16k,
                    encode_chunk, is_silent, probe, split_at_silences)
from .models import CallAnalysis
from .transcript import (SpeakerAssignment, apply_speakers, label_by_channel, numbered_lines, sentences_over,
                         stitch)
from .validate import DroppedInsight, drop_unsupported

ANALYSIS_INSTRUCTIONS = """You analyse a recorded sales call for a sales manager.
Return one JSON object in the given schema, from the transcript (each line: [index] start-end speaker: text).
- Every finding carries `quote`: words copied verbatim from the transcript that support it, and the
  `timestamp` (seconds) where they are said. Findings without a verbatim quote are discarded.
- Participants: name, role (sales rep, customer, decision maker...), company, and their speaker label.
- Entities: companies, people, products, prices (amount, ISO currency, unit), dates.
- Sentiment overall and per speaker; pain points, objections, competitors, next steps (owner, due), and the
  questions asked. Never invent: leave lists empty when the call does not say."""
CHANNEL_SPEAKERS = ("agent", "customer")  # a two-channel call recorder's left and right
SPEAKER_INSTRUCTIONS = """Find the speaker turns in the numbered transcript lines of this two-party sales call: for
line 0 and for every line where the speaker changes, give its index and who speaks from there on, "agent" for the
seller, "customer" for the buyer. Use the content and turn-taking."""


def chunk_audio(data: bytes, *, max_duration_s: float, max_chunk_s: float, lanes: int = 1,
                keep_channels: bool = False) -> tuple[dict, list[tuple[float, float, bytes]]]:
    """Probe, decode and cut at silences into chunks for `lanes` parallel transcriptions, each encoded as 16 kHz
    WAV under the API's size limit: mono, or a two-party recording's two channels when `keep_channels` (for a
    model heard in pieces, which are mixed down before they are sent)."""
    info = probe(data, max_duration_s=max_duration_s)
    samples = decode_channels_16k(data) if keep_channels and info.channels == 2 else decode_mono_16k(data)
    return info.model_dump(), [(start, end, encode_chunk(part)) for start, end, part in _cut(samples, max_chunk_s,
                                                                                             lanes)]


def _cut(samples: np.ndarray, max_s: float, lanes: int = 1) -> list[tuple[float, float, np.ndarray]]:
    """(start, end, samples) of parts of at most `max_s` cut at silences, in whole rounds of `lanes`."""
    duration = samples.shape[-1] / RATE
    if not duration:
        return []
    bounds = split_at_silences(samples, RATE, chunk_count(duration, max_s, lanes), max_chunk_s=max_s)
    return [(start, end, chunk_samples(samples, RATE, start, end)) for start, end in bounds]


def transcribe_audio(provider: AIProvider, audio: bytes, *, filename: str, language: str | None,
                     piece_s: float) -> Result[list[Segment]]:
    """A recording's segments, timed from its start.

    A model that times its segments (whisper) hears the file as it is. One that answers text alone
    (gpt-4o-mini-transcribe) hears it in pieces of at most `piece_s` cut at pauses, one after another, silent
    ones skipped, and each piece's sentences share its span in proportion to their length. In a two-channel
    recording (one party a channel) a piece is cut further where the other party takes the turn, and its
    sentences carry that channel's speaker. A failure carries the usage of the pieces already paid for, so that the
    job's cost counts them.
    """
    if provider.timed_transcripts:
        return provider.transcribe(audio, filename=filename, language=language)
    channels = decode_channels_16k(audio)
    mono = channels.mean(axis=0) if channels.shape[0] > 1 else channels[0]
    pieces, usage = [], []
    for start, end, part in _cut(mono, piece_s):
        turns = channel_turns(chunk_samples(channels, RATE, start, end)) if channels.shape[0] == 2 else \
            [(0.0, end - start, None)]
        for turn_start, turn_end, who in turns:
            heard = chunk_samples(part, RATE, turn_start, turn_end)
            if is_silent(heard):
                continue
            try:
                result = provider.transcribe(encode_chunk(heard), filename="piece.wav", language=language,
                                             seconds=turn_end - turn_start)
            except AIError as error:
                error.usage = usage + error.usage
                raise
            usage += result.usage
            sentences = sentences_over(" ".join(s.text for s in result.value), turn_start, turn_end)
            speaker = CHANNEL_SPEAKERS[who] if who is not None else None
            pieces.append(((start, end), [replace(s, speaker=speaker) for s in sentences]))
    return Result(stitch(pieces), usage)


def segments_of(items: Sequence[dict]) -> list[Segment]:
    return [Segment(float(s["start"]), float(s["end"]), s["text"], s.get("speaker")) for s in items]


def analyse(provider: AIProvider, audio: bytes, chunks: list[dict], channels: int) -> tuple[dict, list[Usage]]:
    """Stitched transcript with speakers, the checked analysis, embeddings of segments, and the call's cost."""
    usage: list[Usage] = []
    segments = stitch([((c["start"], c["end"]), segments_of(c["segments"])) for c in chunks])
    with ThreadPoolExecutor(1) as pool:  # embeddings need only the words: they run while the model analyses
        embedding = pool.submit(provider.embed, [s.text for s in segments]) if segments else None
        segments, analysis, dropped = _labelled_and_analysed(provider, audio, segments, channels, usage)
        vectors = embedding.result() if embedding else Result([], [])
    usage += vectors.usage
    return {"segments": [_segment_dict(s) for s in segments], "analysis": analysis.model_dump(),
            "dropped": [d.model_dump() for d in dropped], "vectors": vectors.value,
            "speakers": sorted({s.speaker for s in segments if s.speaker})}, usage


def _labelled_and_analysed(provider: AIProvider, audio: bytes, segments: list[Segment], channels: int,
                           usage: list[Usage]) -> tuple[list[Segment], CallAnalysis, list[DroppedInsight]]:
    """Speakers on the segments, then the analysis with the insights whose quotes are not in the transcript dropped;
    model usage is added to `usage`."""
    if channels == 2 and any(s.speaker is None for s in segments):  # pieces heard by turn come labelled
        segments = label_by_channel(segments, decode_channels_16k(audio), RATE, names=CHANNEL_SPEAKERS)
    if segments and any(s.speaker is None for s in segments) and provider.name != "offline":
        assigned = provider.extract(SpeakerAssignment, instructions=SPEAKER_INSTRUCTIONS,
                                    text=numbered_lines(segments))
        usage += assigned.usage
        segments = apply_speakers(segments, assigned.value)
    if provider.name == "offline":
        from .offline import analyse_rules

        analysis = analyse_rules(segments)
    else:
        result = provider.extract(CallAnalysis, instructions=ANALYSIS_INSTRUCTIONS, text=numbered_lines(segments))
        usage += result.usage
        analysis = result.value
    analysis, dropped = drop_unsupported(analysis, segments)
    return segments, analysis, dropped


def _segment_dict(segment: Segment) -> dict[str, Any]:
    return {"start": round(segment.start, 3), "end": round(segment.end, 3), "text": segment.text,
            "speaker": segment.speaker}
