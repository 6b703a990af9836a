"""Call transcripts as segments: stitching chunks, text/SRT/VTT/JSON, speaker labels and word error rate."""
from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, replace

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..ai.port import Segment

_LINE = re.compile(r"^\s*([A-Za-z][\w .'-]{0,40}?)\s*:\s*(.+)$")
# a sentence ends at . ! ? … perhaps followed by a closing quote or bracket, then a space; at 。！？ (and a closing
# quote) with or without one
_SENTENCE_BREAK = re.compile(r"(?:(?<=[.!?…])|(?<=[.!?…][\"'”’)\]]))\s+"
                             r"|(?:(?<=[。！？])(?![」』）”’\"')\]])|(?<=[。！？][」』）”’\"')\]]))\s*")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})


def stitch(chunks: Iterable[tuple[tuple[float, float] | float, Sequence[Segment]]]) -> list[Segment]:
    """One transcript from per-chunk segments: each chunk's offset added, in time order, without overlaps.

    `chunks` pairs each chunk's (start, end) from `split_at_silences` (or just its start) with the segments its
    transcription returned, timed from the start of the chunk. Segments are clamped to their chunk, so a model
    that runs past the end of its audio cannot push the next chunk's words out of order; empty ones are dropped.
    """
    bounded = []
    for bounds, segments in chunks:
        start, end = (float(bounds), None) if isinstance(bounds, (int, float)) else (float(bounds[0]), float(bounds[1]))
        bounded.append((start, end, segments))
    stitched: list[Segment] = []
    for start, end, segments in sorted(bounded, key=lambda chunk: chunk[0]):
        for segment in sorted(segments, key=lambda s: (s.start, s.end)):
            text = " ".join(segment.text.split())
            if not text:
                continue
            floor = stitched[-1].end if stitched else 0.0
            begin, finish = max(start + max(0.0, segment.start), floor), start + segment.end
            if end is not None:
                begin, finish = max(floor, min(begin, end)), min(finish, end)
            finish = max(begin, finish)
            stitched.append(Segment(round(begin, 3), round(finish, 3), text, segment.speaker))
    return stitched


def from_txt(text: str, *, duration: float | None = None) -> list[Segment]:
    """Segments from a plain transcript with one `speaker: words` line per turn (the speaker is optional).

    Plain text has no times: with `duration`, lines are spread over it in proportion to their length (an estimate);
    without, every segment starts and ends at 0.
    """
    lines = []
    for raw in text.splitlines():
        if not raw.strip():
            continue
        match = _LINE.match(raw)
        speaker, words = (match.group(1).strip(), match.group(2).strip()) if match else (None, raw.strip())
        lines.append((speaker, " ".join(words.split())))
    times = _spread([len(words) for _, words in lines], 0.0, duration or 0.0)
    return [Segment(start, end, words, speaker) for (speaker, words), (start, end) in zip(lines, times)]


def sentences_over(text: str, start: float, end: float) -> list[Segment]:
    """The sentences of a text heard from `start` to `end`, each timed by a share of that span in proportion to its
    length: the estimate for a model that returns words without times."""
    sentences = [" ".join(part.split()) for part in _SENTENCE_BREAK.split(text) if part.strip()]
    times = _spread([len(sentence) for sentence in sentences], start, end - start)
    return [Segment(begin, finish, sentence) for sentence, (begin, finish) in zip(sentences, times)]


def _spread(lengths: Sequence[int], start: float, duration: float) -> list[tuple[float, float]]:
    """Consecutive (start, end) spans over `duration` from `start`, one per length, in proportion to it."""
    total, clock, spans = sum(lengths) or 1, float(start), []
    for length in lengths:
        share = duration * length / total
        spans.append((round(clock, 3), round(clock + share, 3)))
        clock += share
    return spans


def plain_text(segments: Sequence[Segment]) -> str:
    """The words alone, without speakers or times."""
    return " ".join(s.text for s in segments)


def to_txt(segments: Sequence[Segment], *, timestamps: bool = False) -> str:
    """One line per segment, `speaker: text` when the speaker is known, `[m:ss]` first when asked."""
    lines = []
    for s in segments:
        prefix = f"[{_clock(s.start, ',', hours=False)[:-4]}] " if timestamps else ""
        lines.append(f"{prefix}{s.speaker}: {s.text}" if s.speaker else f"{prefix}{s.text}")
    return "\n".join(lines) + ("\n" if lines else "")


def _clock(seconds: float, separator: str, *, hours: bool = True) -> str:
    millis = round(max(0.0, seconds) * 1000)
    h, rest = divmod(millis, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    if not hours:
        return f"{h * 60 + m}:{s:02d}{separator}{ms:03d}"
    return f"{h:02d}:{m:02d}:{s:02d}{separator}{ms:03d}"


def to_srt(segments: Sequence[Segment]) -> str:
    """SubRip subtitles; the speaker leads the cue's text."""
    cues = []
    for number, s in enumerate(segments, 1):
        text = f"{s.speaker}: {s.text}" if s.speaker else s.text
        cues.append(f"{number}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{text}\n")
    return "\n".join(cues)


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_vtt(segments: Sequence[Segment]) -> str:
    """WebVTT captions; the speaker goes in a voice tag (`<v agent>`), which players show as the speaker."""
    cues = ["WEBVTT\n"]
    for s in segments:
        text = _vtt_escape(s.text)
        if s.speaker:
            text = f"<v {_vtt_escape(s.speaker)}>{text}"
        cues.append(f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{text}\n")
    return "\n".join(cues)


def to_json(segments: Sequence[Segment]) -> str:
    return json.dumps([asdict(s) for s in segments], ensure_ascii=False)


def from_json(text: str | bytes) -> list[Segment]:
    return [Segment(float(item["start"]), float(item["end"]), str(item["text"]), item.get("speaker"))
            for item in json.loads(text)]


def label_by_channel(segments: Sequence[Segment], channels: np.ndarray, rate: int,
                     names: Sequence[str] = ("speaker_1", "speaker_2"), *, margin_db: float = 3.0) -> list[Segment]:
    """Speakers from a recording with one party per channel: each segment goes to the louder channel.

    `channels` is shaped (channels, samples) as from `decode_channels_16k`. When no channel is louder by
    `margin_db` (a mono recording copied to both sides, or both talking at once), the segment keeps its speaker.
    """
    if channels.ndim != 2 or channels.shape[0] < 2:
        return list(segments)
    if len(names) < channels.shape[0]:
        raise ValueError("one name per channel is needed")
    labelled = []
    for segment in segments:
        part = channels[:, int(segment.start * rate):max(int(segment.start * rate) + 1, int(segment.end * rate))]
        energy = np.einsum("ij,ij->i", part, part, dtype=np.float64) / max(1, part.shape[1])
        order = np.argsort(energy)[::-1]
        loudest, second = float(energy[order[0]]), float(energy[order[1]])
        if loudest > 0 and (second <= 0 or 10 * np.log10(loudest / second) >= margin_db):
            segment = replace(segment, speaker=names[int(order[0])])
        labelled.append(segment)
    return labelled


class SpeakerTurn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: int = Field(description="The number, as given in brackets, of the line where this speaker's turn begins")
    speaker: str = Field(description="Who speaks from that line on, e.g. 'agent' or 'customer', or a name")


class SpeakerAssignment(BaseModel):
    """What a model answers when asked where each speaker's turn begins among numbered lines (see `numbered_lines`):
    one entry per change of speaker, so the answer stays short however long the call."""

    model_config = ConfigDict(extra="forbid")

    turns: list[SpeakerTurn]


def numbered_lines(segments: Sequence[Segment]) -> str:
    """The transcript as `[index] text` lines, the form a model is shown to assign speakers by index."""
    return "\n".join(f"[{i}] {s.text}" for i, s in enumerate(segments))


MAX_SPEAKER_CHARS = 40


def apply_speakers(segments: Sequence[Segment],
                   assignment: SpeakerAssignment | Mapping[int | str, str]) -> list[Segment]:
    """Segments with the speakers a model assigned: a turn's speaker goes to its line and to the unlabelled lines
    after it, up to the next turn or labelled line, whose speaker carries on; lines before the first turn, and
    indexes it made up, change nothing."""
    if isinstance(assignment, SpeakerAssignment):
        mapping = {turn.index: turn.speaker for turn in assignment.turns}
    else:
        mapping = {}
        for key, speaker in assignment.items():
            try:
                mapping[int(key)] = speaker
            except (TypeError, ValueError):
                continue
    labelled, current = [], None
    for i, segment in enumerate(segments):
        named = " ".join(str(mapping.get(i) or "").split())[:MAX_SPEAKER_CHARS]  # one line: a cue of its own
        if named:
            current = named
            segment = replace(segment, speaker=named)
        elif segment.speaker is None and current:
            segment = replace(segment, speaker=current)
        else:
            current = segment.speaker or current  # a line labelled before (by its channel) carries on, too
        labelled.append(segment)
    return labelled


def normalise_words(text: str) -> list[str]:
    """Lower-case words without punctuation: the form WER and quote matching compare."""
    text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES).lower()
    return re.findall(r"[^\W_]+(?:'[^\W_]+)*", text)


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate: (substitutions + deletions + insertions) / words in the reference, on normalised words."""
    ref, hyp = normalise_words(reference), normalise_words(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    previous = list(range(len(hyp) + 1))
    for i, word in enumerate(ref, 1):
        current = [i] + [0] * len(hyp)
        for j, other in enumerate(hyp, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (word != other))
        previous = current
    return previous[-1] / len(ref)
