"""The AI port's interface and its value types; providers implement `AIProvider`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, Sequence, TypeVar

from pydantic import BaseModel

from .usage import Usage

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Image:
    data: bytes
    mime_type: str  # image/png, image/jpeg or image/webp


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str
    speaker: str | None = None


@dataclass
class Result(Generic[T]):
    value: T
    usage: list[Usage] = field(default_factory=list)


@dataclass(frozen=True)
class ExtractionHints:
    """What the caller knows about the input; offline rules use it, models see it in the prompt."""

    source: str | None = None
    subject: str | None = None
    sender: str | None = None
    sent_at: str | None = None  # ISO date the message was sent, for relative dates like "valid 30 days"
    language: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class AIProvider(Protocol):
    name: str
    # whether `transcribe` returns segments timed by the model (whisper); otherwise it returns the audio's text as
    # one segment, and callers that need times send the audio in short pieces
    timed_transcripts: bool

    def extract(self, schema: type[M], *, instructions: str, text: str | None = None,
                images: Sequence[Image] = (), hints: ExtractionHints | None = None) -> Result[M]: ...

    def read_image_text(self, image: Image) -> Result[str]: ...

    def transcribe(self, audio: bytes, *, filename: str, language: str | None = None,
                   seconds: float | None = None) -> Result[list[Segment]]:
        """`seconds`: the audio's length when the caller knows it, for the usage and the untimed segment's end."""
        ...

    def embed(self, texts: Sequence[str]) -> Result[list[list[float]]]: ...

    def chat(self, messages: Sequence[dict[str, str]]) -> Result[str]: ...
