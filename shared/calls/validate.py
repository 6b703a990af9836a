"""Keeps only the findings of a call analysis whose quotes are in the transcript, timed where they are said."""
from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher

from pydantic import BaseModel, ConfigDict

from ..ai.port import Segment
from .models import CallAnalysis, Evidence
from .transcript import normalise_words

MIN_RATIO = 0.9
_ANCHORS = 3  # the first and last few words of a quote place the windows worth comparing


class DroppedInsight(BaseModel):
    model_config = ConfigDict(extra="forbid")

    field: str  # where it was, e.g. "objections[1]" or "entities.prices[0]"
    quote: str
    best_ratio: float  # how close the nearest stretch of transcript came, 0..1


@dataclass(frozen=True)
class Found:
    ratio: float
    timestamp: float
    speaker: str | None


class QuoteFinder:
    """The transcript as one stream of normalised words, each timed by its place within its segment."""

    def __init__(self, segments: Sequence[Segment]) -> None:
        self.words: list[str] = []
        self.times: list[float] = []
        self.speakers: list[str | None] = []
        for segment in segments:
            words = normalise_words(segment.text)
            span = max(0.0, segment.end - segment.start)
            for i, word in enumerate(words):
                # a long segment (a whole chunk, when the model returns no segments) still gets a usable time
                self.words.append(word)
                self.times.append(segment.start + span * i / len(words))
                self.speakers.append(segment.speaker)
        self.text = " ".join(self.words)
        self.offsets = []
        offset = 0
        for word in self.words:
            self.offsets.append(offset)
            offset += len(word) + 1
        self.positions: dict[str, list[int]] = {}
        for i, word in enumerate(self.words):
            self.positions.setdefault(word, []).append(i)

    def _at(self, index: int, ratio: float) -> Found:
        return Found(ratio, round(self.times[index], 2), self.speakers[index])

    def _nearest(self, starts: list[int], near: float | None) -> int:
        if near is None:
            return starts[0]
        return min(starts, key=lambda i: (abs(self.times[i] - near), i))

    def find(self, quote: str, min_ratio: float = MIN_RATIO, *,
             near: float | None = None) -> tuple[Found | None, float]:
        """Where the quote is said and the best ratio seen: an exact match before a fuzzy one, and of equally
        good places the one nearest `near` (the time the model gave), else the first."""
        wanted = normalise_words(quote)
        if not wanted or not self.words:
            return None, 0.0
        needle = " ".join(wanted)
        padded, exact = " " + self.text + " ", []
        at = padded.find(" " + needle + " ")
        while at >= 0:
            exact.append(bisect.bisect_left(self.offsets, at))
            at = padded.find(" " + needle + " ", at + 1)
        if exact:
            return self._at(self._nearest(exact, near), 1.0), 1.0
        size = len(wanted)
        slack = max(1, size // 10)
        starts: set[int] = set()
        for k, word in enumerate(wanted[:_ANCHORS]):
            starts.update(p - k for p in self.positions.get(word, ()))
        for k, word in enumerate(wanted[-_ANCHORS:]):
            back = size - min(_ANCHORS, size) + k  # index of this anchor within the quote
            starts.update(p - back + shift for p in self.positions.get(word, ()) for shift in range(-slack, slack + 1))
        best: list[int] = []
        best_ratio = 0.0
        matcher = SequenceMatcher(None, autojunk=False)
        matcher.set_seq2(needle)
        for start in sorted(s for s in starts if 0 <= s < len(self.words)):
            for length in range(max(1, size - slack), size + slack + 1):
                if start + length > len(self.words):
                    break
                matcher.set_seq1(" ".join(self.words[start:start + length]))
                bar = max(min_ratio, best_ratio)
                if matcher.real_quick_ratio() < bar or matcher.quick_ratio() < bar:
                    continue
                ratio = matcher.ratio()
                if ratio > best_ratio:
                    best, best_ratio = [start], ratio
                elif ratio == best_ratio and start not in best:
                    best.append(start)
        best_ratio = round(best_ratio, 3)
        if best and best_ratio >= min_ratio:
            return self._at(self._nearest(best, near), best_ratio), best_ratio
        return None, best_ratio


def _items(analysis: CallAnalysis):
    """(field path, list or None, index, evidence) for every finding that carries a quote."""
    if analysis.sentiment is not None:
        yield "sentiment", None, None, analysis.sentiment
    for name in ("pain_points", "objections", "competitors", "next_steps", "questions", "speaker_sentiment"):
        for i, item in enumerate(getattr(analysis, name)):
            yield f"{name}[{i}]", name, i, item
    for name in ("companies", "people", "products", "prices", "dates"):
        for i, item in enumerate(getattr(analysis.entities, name)):
            yield f"entities.{name}[{i}]", f"entities.{name}", i, item


def drop_unsupported(analysis: CallAnalysis, segments: Sequence[Segment], *,
                     min_ratio: float = MIN_RATIO) -> tuple[CallAnalysis, list[DroppedInsight]]:
    """The analysis without findings whose quote is not in the transcript, and a list of what was dropped.

    Quotes compare as lower-case words without punctuation; a stretch of transcript matches when its
    SequenceMatcher ratio to the quote is at least `min_ratio`, so a slip of a letter or a word passes and an
    invented sentence does not. Kept findings get the timestamp (and, if missing, the speaker) of where the
    quote starts; a quote said more than once is placed where it is said nearest the timestamp the model gave.
    """
    finder = QuoteFinder(segments)
    result = analysis.model_copy(deep=True)
    dropped: list[DroppedInsight] = []
    removed: dict[str, set[int]] = {}
    for path, container, index, item in list(_items(result)):
        item: Evidence
        found, ratio = finder.find(item.quote, min_ratio, near=item.timestamp)
        if found is None:
            dropped.append(DroppedInsight(field=path, quote=item.quote, best_ratio=ratio))
            if container is None:
                result.sentiment = None
            else:
                removed.setdefault(container, set()).add(index)
            continue
        item.timestamp = found.timestamp
        if item.speaker is None and found.speaker is not None:
            item.speaker = found.speaker
    for container, indexes in removed.items():
        owner, name = (result.entities, container.split(".", 1)[1]) if "." in container else (result, container)
        setattr(owner, name, [x for i, x in enumerate(getattr(owner, name)) if i not in indexes])
    return result, dropped
