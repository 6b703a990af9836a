"""The call pipeline's work: chunk the audio, transcribe a chunk, then stitch, label, analyse and check."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import numpy as np

from ..ai.port import AIProvider, Result, Segment
from ..ai.usage import Usage, combined
from ..errors import AIError
from .audio import (RATE, chunk_count, chunk_samples, decode_channels_16k, decode_mono_16k, encode_chunk, is_silent,
                    probe, split_at_silences)
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
SPEAKER_INSTRUCTIONS = """Find the speaker turns in the numbered transcript lines of this two-party sales call: for
line 0 and for every line where the speaker changes, give its index and who speaks from there on, "agent" for the
seller, "customer" for the buyer. Use the content and turn-taking."""


def chunk_audio(data: bytes, *, max_duration_s: float, max_chunk_s: float,
                lanes: int = 1) -> tuple[dict, list[tuple[float, float, bytes]]]:
    """Probe, decode and cut at silences into chunks for `lanes` parallel transcriptions, each encoded as 16 kHz
    mono WAV under the API's size limit."""
    info = probe(data, max_duration_s=max_duration_s)
    return info.model_dump(), [(start, end, encode_chunk(part))
                               for start, end, part in _cut(decode_mono_16k(data), max_chunk_s, lanes)]


def _cut(samples: np.ndarray, max_s: float, lanes: int = 1) -> list[tuple[float, float, np.ndarray]]:
    """(start, end, samples) of parts of at most `max_s` cut at silences, in whole rounds of `lanes`."""
    duration = samples.shape[0] / RATE
    if not duration:
        return []
    bounds = split_at_silences(samples, RATE, chunk_count(duration, max_s, lanes), max_chunk_s=max_s)
    return [(start, end, chunk_samples(samples, RATE, start, end)) for start, end in bounds]


def transcribe_audio(provider: AIProvider, audio: bytes, *, filename: str, language: str | None,
                     piece_s: float) -> Result[list[Segment]]:
    """A recording's segments, timed from its start.

    A model that times its segments (whisper) hears the file as it is. One that answers text alone
    (gpt-4o-mini-transcribe) hears it in pieces of at most `piece_s` cut at pauses, one after another, silent
    ones skipped, and each piece's sentences share its span in proportion to their length. A failure carries the
    usage of the pieces already paid for, so that the job's cost counts them.
    """
    if provider.timed_transcripts:
        return provider.transcribe(audio, filename=filename, language=language)
    pieces, usage = [], []
    for start, end, part in _cut(decode_mono_16k(audio), piece_s):
        if is_silent(part):
            continue
        try:
            heard = provider.transcribe(encode_chunk(part), filename="piece.wav", language=language,
                                        seconds=end - start)
        except AIError as error:
            error.usage = combined(usage + error.usage)
            raise
        usage += heard.usage
        pieces.append(((start, end), sentences_over(" ".join(s.text for s in heard.value), 0.0, end - start)))
    return Result(stitch(pieces), combined(usage))


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
    if channels == 2:  # one party a channel; a recording of more channels gets the model pass
        segments = label_by_channel(segments, decode_channels_16k(audio), RATE, names=("agent", "customer"))
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
