"""Semantic search over the segments of analysed calls, vectors kept in memory per worker."""
from __future__ import annotations

import json
import re
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from ..ai.port import AIProvider
from ..blocking import in_thread
from ..storage.blobs import BlobStore

_cache: dict[str, tuple[list, dict[int, tuple[Any, list[dict]]]]] = {}
_ANALYSIS = re.compile(r"(?!uploads/|deleted/)[^/]+/result\.json")


async def _corpus(blobs: BlobStore) -> dict[int, tuple[Any, list[dict]]]:
    """Segment vectors of every analysed call, one matrix per vector size (calls analysed with another
    embedding model cannot be compared); rebuilt when the set of calls changed."""
    import numpy as np

    client = await blobs._container("calls")
    # `<call id>/result.json` only: an upload (`uploads/<id>/<file name>`) may be named result.json, too
    found = sorted([(b.name, b.etag) async for b in client.list_blobs() if _ANALYSIS.fullmatch(b.name)])
    cached = _cache.get("calls")
    if cached and cached[0] == found:
        return cached[1]
    groups: dict[int, tuple[list, list[dict]]] = {}
    for name, _ in found:
        try:
            stored = json.loads(await blobs.get(f"calls/{name}"))
            pairs = list(zip(stored["segments"], stored.get("vectors") or []))
        except ResourceNotFoundError:  # the call was deleted since the listing
            continue
        for segment, vector in pairs:
            rows, meta = groups.setdefault(len(vector), ([], []))
            rows.append(vector)
            meta.append({"call_id": name.split("/")[0], **segment})
    corpus = {}
    for size, (rows, meta) in groups.items():
        matrix = np.asarray(rows, dtype=np.float32)
        matrix /= np.linalg.norm(matrix, axis=1, keepdims=True) + 1e-12
        corpus[size] = (matrix, meta)
    _cache["calls"] = (found, corpus)
    return corpus


async def search(blobs: BlobStore, provider: AIProvider, query: str, k: int = 5) -> list[dict]:
    import numpy as np

    corpus = await _corpus(blobs)
    vector = np.asarray((await in_thread(provider.embed, [query])).value[0], dtype=np.float32)
    matrix, meta = corpus.get(vector.shape[0], (None, []))
    if not meta:
        return []
    scores = matrix @ (vector / (np.linalg.norm(vector) + 1e-12))
    top = np.argsort(-scores)[:k]
    return [{**meta[i], "score": round(float(scores[i]), 4)} for i in top]
