"""The business's documents as retrievable knowledge: token-aware chunks and an exact cosine vector index."""
from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

DEFAULT_CHUNK_TOKENS = 300
DEFAULT_OVERLAP_TOKENS = 50

_WORD = re.compile(r"\S+")
# Words and punctuation marks each count as one token: close enough to BPE for sizing chunks,
# and it needs no tokenizer download.
_TOKEN = re.compile(r"\w+|[^\w\s]")


class Chunk(BaseModel):
    """A passage of a document; `page_start`/`page_end` are set when the text came with page numbers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    index: int
    text: str
    tokens: int
    page_start: int | None = None
    page_end: int | None = None


# Scripts written without spaces between words (Thai, Lao, Myanmar, Khmer, Japanese kana, Chinese characters) and
# Hangul: BPE makes about a token of each character.
_DENSE = re.compile(r"[\u0E00-\u0EFF\u1000-\u109F\u1780-\u17FF\u3040-\u30FF\u3400-\u4DBF\u4E00-\u9FFF"
                    r"\uAC00-\uD7AF\uF900-\uFAFF]")
PIECE = 100  # characters: a word too long for a chunk is cut into pieces this long


def count_tokens(text: str) -> int:
    """Words and marks count a token each, and each character of a script written without spaces."""
    dense = len(_DENSE.findall(text))
    return dense + len(_TOKEN.findall(_DENSE.sub(" ", text) if dense else text))


@dataclass(frozen=True)
class _Word:
    text: str
    tokens: int
    page: int | None
    start: int  # offset in its page, so a chunk keeps the page's own spacing and line breaks
    end: int


def _words(pages: Sequence[tuple[int | None, str]], size: int) -> list[_Word]:
    """The words of the pages; one too long for a chunk (a paragraph of a script written without spaces) is cut
    into pieces of `PIECE` characters, so that it spreads over chunks instead of making one enormous chunk."""
    words = []
    for page, text in pages:
        for m in _WORD.finditer(text):
            tokens = max(1, count_tokens(m.group()))
            if tokens <= size:
                words.append(_Word(m.group(), tokens, page, m.start(), m.end()))
                continue
            for start in range(m.start(), m.end(), PIECE):
                end = min(start + PIECE, m.end())
                words.append(_Word(text[start:end], max(1, count_tokens(text[start:end])), page, start, end))
    return words


def _render(words: list[_Word], pages: dict[int | None, str]) -> str:
    parts: list[str] = []
    run_start = 0
    for i in range(1, len(words) + 1):
        if i == len(words) or words[i].page != words[run_start].page:
            source = pages[words[run_start].page]
            parts.append(source[words[run_start].start:words[i - 1].end])
            run_start = i
    return "\n\n".join(parts)


def chunk_text(content: str | Sequence[tuple[int, str]], *, size: int = DEFAULT_CHUNK_TOKENS,
               overlap: int = DEFAULT_OVERLAP_TOKENS) -> list[Chunk]:
    """Chunks of at most `size` tokens, each repeating up to `overlap` tokens of the one before.

    `content` is plain text or a list of (page number, page text). Chunks end between words; a word longer than
    `size` (a paragraph of Thai or Japanese, written without spaces) is cut into pieces of `PIECE` characters.
    """
    if size < 1 or not 0 <= overlap < size:
        raise ValueError("size must be positive and 0 <= overlap < size")
    pages: list[tuple[int | None, str]] = [(None, content)] if isinstance(content, str) else list(content)
    by_page = dict(pages)
    if len(by_page) != len(pages):
        raise ValueError("page numbers must be unique")
    words = _words(pages, size)
    chunks: list[Chunk] = []
    start = 0
    while start < len(words):
        end, used = start, 0
        while end < len(words) and (end == start or used + words[end].tokens <= size):
            used += words[end].tokens
            end += 1
        part = words[start:end]
        chunks.append(Chunk(index=len(chunks), text=_render(part, by_page), tokens=used,
                            page_start=part[0].page, page_end=part[-1].page))
        if end == len(words):
            break
        # Step back over whole words worth at most `overlap` tokens, but always move forward.
        back, carried = end, 0
        while back > start + 1 and carried + words[back - 1].tokens <= overlap:
            carried += words[back - 1].tokens
            back -= 1
        start = back
    return chunks


@dataclass(frozen=True)
class Hit:
    doc_id: str
    chunk: Chunk
    score: float  # cosine similarity, -1 .. 1


def packed_vectors(vectors: Sequence[Sequence[float]]) -> dict:
    """Vectors for a JSON document: float32 bytes in base64, with their width."""
    if not len(vectors):
        return {"dim": 0, "vectors_f32": ""}
    matrix = np.asarray(vectors, dtype="<f4").reshape(len(vectors), -1)
    return {"dim": int(matrix.shape[1]), "vectors_f32": base64.b64encode(matrix.tobytes()).decode()}


def unpacked_vectors(document: dict) -> np.ndarray:
    """The vectors of `packed_vectors` (or of the JSON lists stored before it) as a float32 matrix."""
    if "vectors_f32" not in document:
        rows = document.get("vectors") or []
        return np.asarray(rows, dtype=np.float32) if rows else np.zeros((0, 0), dtype=np.float32)
    flat = np.frombuffer(base64.b64decode(document["vectors_f32"]), dtype="<f4")
    return flat.reshape(-1, document["dim"]) if document["dim"] else flat.reshape(0, 0)


def _normalised(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    if not np.all(np.isfinite(vectors)) or np.any(norms == 0):
        raise ValueError("vectors must be finite and non-zero")
    return (vectors / norms).astype(np.float32)


class VectorIndex:
    """Exact top-k cosine search over L2-normalised float32 rows, one row per chunk.

    Exact search is one matrix-vector product: for the tens of thousands of chunks a small
    business has, that is milliseconds, with no approximate-index recall to tune.
    """

    def __init__(self, dim: int | None = None) -> None:
        self.dim = dim
        self._matrix = np.zeros((0, dim or 0), dtype=np.float32)
        self._rows: list[tuple[str, Chunk]] = []

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def doc_ids(self) -> list[str]:
        return list(dict.fromkeys(doc_id for doc_id, _ in self._rows))

    def add(self, doc_id: str, chunks: Sequence[Chunk], vectors: Sequence[Sequence[float]] | np.ndarray) -> None:
        """Index a document's chunks; a document already indexed under `doc_id` is replaced."""
        if not len(chunks):
            self.remove(doc_id)
            return
        matrix = np.asarray(vectors, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[0] != len(chunks):
            raise ValueError("vectors must be a 2-D array with one row per chunk")
        if self.dim is None:
            self.dim = matrix.shape[1]
            self._matrix = np.zeros((0, self.dim), dtype=np.float32)
        if matrix.shape[1] != self.dim:
            raise ValueError(f"vectors have {matrix.shape[1]} dimensions, the index {self.dim}")
        matrix = _normalised(matrix)
        self.remove(doc_id)
        self._matrix = np.vstack([self._matrix, matrix])
        self._rows.extend((doc_id, chunk) for chunk in chunks)

    def remove(self, doc_id: str) -> int:
        """Forget a document's chunks; returns how many were removed."""
        keep = np.array([d != doc_id for d, _ in self._rows], dtype=bool)
        removed = int(len(keep) - keep.sum())
        if removed:
            self._matrix = self._matrix[keep]
            self._rows = [row for row, kept in zip(self._rows, keep) if kept]
        return removed

    def search(self, query_vector: Sequence[float] | np.ndarray, k: int = 5) -> list[Hit]:
        """The `k` chunks most similar to the query, best first. A zero query is near nothing."""
        if k < 1 or not self._rows:
            return []
        query = np.asarray(query_vector, dtype=np.float32).reshape(-1)
        if query.shape[0] != self.dim:
            raise ValueError(f"query has {query.shape[0]} dimensions, the index {self.dim}")
        if not np.any(query):
            return []
        scores = self._matrix @ _normalised(query)
        k = min(k, len(scores))
        # argpartition finds the k best in linear time; only those k are then sorted.
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.lexsort((top, -scores[top]))]  # ties: earlier rows first, so results are repeatable
        return [Hit(doc_id=self._rows[i][0], chunk=self._rows[i][1], score=float(scores[i])) for i in top]
