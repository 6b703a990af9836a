"""The offline provider: local methods with the same shapes, so the app works without a key or a network."""
from __future__ import annotations

import functools
import hashlib
import math
import re
import shutil
import subprocess
import threading
from typing import Any, Callable, Sequence

from ..errors import AIError
from .port import ExtractionHints, Image, M, Result, Segment
from .usage import Usage

EMBEDDING_DIMENSIONS = 512
_WORD = re.compile(r"\w+", re.UNICODE)


def _usage(operation: str, **fields: Any) -> Usage:
    return Usage(model=f"offline-{operation}", operation=operation, **fields)


class _Ocr:
    """Tesseract when the machine has it (better word spacing for Latin scripts), else RapidOCR, whose ONNX
    models ship inside the wheel so it runs anywhere, Azure included; loaded once per process."""

    _engine = None
    _lock = threading.Lock()
    _TESSERACT_LANGUAGES = ("eng", "deu", "fra", "spa", "ita")

    @classmethod
    def read(cls, data: bytes) -> str:
        tesseract = shutil.which("tesseract")
        if tesseract:
            languages = _tesseract_languages(tesseract)
            done = subprocess.run([tesseract, "stdin", "stdout", "-l", languages], input=data,
                                  capture_output=True, timeout=120)
            if done.returncode == 0:
                return "\n".join(line.rstrip() for line in done.stdout.decode(errors="replace").splitlines()
                                 if line.strip())
        with cls._lock:
            if cls._engine is None:
                from rapidocr_onnxruntime import RapidOCR

                cls._engine = RapidOCR()
            lines, _ = cls._engine(data, return_word_box=True)
        return _reading_order(lines or [])


@functools.lru_cache(maxsize=1)
def _tesseract_languages(binary: str) -> str:
    listed = subprocess.run([binary, "--list-langs"], capture_output=True, text=True, timeout=30).stdout.split()
    return "+".join(lang for lang in _Ocr._TESSERACT_LANGUAGES if lang in listed) or "eng"


def _spaced(text: str, chars: list) -> str:
    """RapidOCR's recogniser drops narrow spaces in Latin text; put them back where the glyph gaps are wide."""
    if not chars or len(chars) != len(text):
        return text
    widths = sorted(float(c[1][0]) - float(c[0][0]) for c in chars)
    gap_limit = max(4.0, 0.6 * widths[len(widths) // 2])
    out = [text[0]]
    for i in range(1, len(text)):
        gap = float(chars[i][0][0]) - float(chars[i - 1][1][0])
        if gap > gap_limit and text[i] != " " and text[i - 1] != " ":
            out.append(" ")
        out.append(text[i])
    return "".join(out)


def _reading_order(lines: list) -> str:
    """Boxes to text lines: top to bottom, and left to right within a line."""
    lines = [(line[0], _spaced(line[1], line[3] if len(line) > 3 else []), line[2]) for line in lines]
    boxes = sorted(((float(b[0][1]), float(b[0][0]), float(b[2][1]) - float(b[0][1]), t) for b, t, _ in lines))
    rows: list[list[tuple[float, float, float, str]]] = []
    for box in boxes:
        if rows and abs(box[0] - rows[-1][0][0]) < max(8.0, rows[-1][0][2] * 0.5):
            rows[-1].append(box)
        else:
            rows.append([box])
    return "\n".join(" ".join(t for _, _, _, t in sorted(row, key=lambda b: b[1])) for row in rows)


Extractor = Callable[[str, ExtractionHints], Any]
_EXTRACTORS: dict[str, Extractor] = {}


def register_extractor(schema_name: str, extractor: Extractor) -> None:
    """Capabilities plug their rule-based extraction in here, keyed by the pydantic model's name."""
    _EXTRACTORS[schema_name] = extractor


def hashed_embedding(text: str, dimensions: int = EMBEDDING_DIMENSIONS) -> list[float]:
    """Word and character-trigram features hashed into a fixed vector, L2-normalised."""
    vector = [0.0] * dimensions
    words = [w.lower() for w in _WORD.findall(text)]
    features = words + [w[i:i + 3] for w in words if len(w) > 3 for i in range(len(w) - 2)]
    for feature in features:
        digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
        index = int.from_bytes(digest[:4], "little") % dimensions
        vector[index] += 1.0 if digest[4] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


class OfflineProvider:
    name = "offline"
    timed_transcripts = True

    def extract(self, schema: type[M], *, instructions: str, text: str | None = None,
                images: Sequence[Image] = (), hints: ExtractionHints | None = None) -> Result[M]:
        extractor = _EXTRACTORS.get(schema.__name__)
        if extractor is None:
            raise AIError(f"The offline provider cannot extract {schema.__name__}.", code="offline_unsupported")
        parts = [text or ""] + [_Ocr.read(image.data) for image in images]
        value = extractor("\n".join(p for p in parts if p), hints or ExtractionHints())
        return Result(schema.model_validate(value), [_usage("extract", input_tokens=_tokens(parts))])

    def read_image_text(self, image: Image) -> Result[str]:
        return Result(_Ocr.read(image.data), [_usage("ocr")])

    def transcribe(self, audio: bytes, *, filename: str, language: str | None = None,
                   seconds: float | None = None) -> Result[list[Segment]]:
        """pocketsphinx with the en-US model its wheel ships; English only, lower case, no punctuation."""
        from ..calls.audio import RATE, decode_mono_16k
        from ..calls.offline import transcribe_offline

        samples = decode_mono_16k(audio)
        segments = transcribe_offline(samples, RATE)
        return Result(segments, [_usage("transcribe", audio_seconds=round(len(samples) / RATE, 3))])

    def embed(self, texts: Sequence[str]) -> Result[list[list[float]]]:
        return Result([hashed_embedding(t) for t in texts], [_usage("embed", input_tokens=_tokens(texts))])

    def chat(self, messages: Sequence[dict[str, str]]) -> Result[str]:
        """Answers with the context sentence that shares most words with the question, or says it does not know."""
        question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        context = "\n".join(m["content"] for m in messages if m["role"] == "system")
        asked = _content_words(question)
        best, score = "", 0
        for sentence in re.split(r"(?<=[.!?])\s+|\n+", context):
            overlap = len(asked & _content_words(sentence))
            if overlap > score:
                best, score = sentence.strip(), overlap
        answer = best if score >= 2 else "I don't know."
        return Result(answer, [_usage("chat", input_tokens=_tokens([context, question]))])


_STOPWORDS = frozenset("""the and for are was were what when where which who whom whose why how does did doing
have has had this that these those with from into about there their they them then than your you our out not
can could would should will shall may might must much many more most some any all each per its it's is be been
""".split())


def _content_words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text) if len(w) >= 3 and w.lower() not in _STOPWORDS}


def _tokens(texts: Sequence[str]) -> int:
    return sum(len(_WORD.findall(t or "")) for t in texts)
