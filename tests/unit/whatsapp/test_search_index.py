"""Azure AI Search backend through the real SDK against a fake of the REST API: the same hits as in memory."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from shared.config import Settings
from shared.errors import ServiceUnavailable
from shared.whatsapp.knowledge import Chunk, VectorIndex
from shared.whatsapp.search_index import AzureSearchIndex, chunk_key, cosine_of
from tests.support.fake_search import FakeSearch


def _index(fake: FakeSearch, key: str | None = None) -> AzureSearchIndex:
    return AzureSearchIndex(Settings.model_validate({
        "AzureWebJobsStorage": "UseDevelopmentStorage=true", "KB_SEARCH_BACKEND": "azure_search",
        "AZURE_SEARCH_ENDPOINT": fake.endpoint, "AZURE_SEARCH_API_KEY": key or fake.api_key}))


def test_keys_are_valid_search_keys_and_scores_come_back_as_cosine():
    assert chunk_key("docs/lease v2.pdf", 3) == "docs/lease v2.pdf".encode().hex() + "-3"
    for cos in (-0.5, 0.0, 0.3, 1.0):
        assert cosine_of(1.0 / (1.0 + (1.0 - cos))) == pytest.approx(cos)


def test_top_k_and_scores_match_the_in_memory_index():
    rng = np.random.default_rng(11)
    vectors = rng.standard_normal((60, 16))
    chunks = [Chunk(index=n, text=f"passage {n}", tokens=2) for n in range(60)]
    memory = VectorIndex()
    memory.add("a", chunks[:30], vectors[:30])
    memory.add("b", [c.model_copy(update={"index": c.index - 30}) for c in chunks[30:]], vectors[30:])
    queries = rng.standard_normal((5, 16))
    with FakeSearch() as fake:
        search = _index(fake)

        async def run() -> list:
            await search.replace("a", chunks[:30], vectors[:30].tolist(), 0)
            await search.replace("b", [c.model_copy(update={"index": c.index - 30}) for c in chunks[30:]],
                                 vectors[30:].tolist(), 0)
            return [await search.search(q.tolist(), 5) for q in queries]

        remote = asyncio.run(run())
    for query, hits in zip(queries, remote):
        expected = memory.search(query, k=5)
        assert [(h.doc_id, h.chunk.index) for h in hits] == [(h.doc_id, h.chunk.index) for h in expected]
        assert [h.score for h in hits] == pytest.approx([h.score for h in expected], abs=1e-5)


def test_a_shorter_version_deletes_the_chunks_it_no_longer_has_and_a_refused_key_is_final():
    chunks = [Chunk(index=n, text=f"passage {n}", tokens=2) for n in range(4)]
    with FakeSearch() as fake:
        search = _index(fake)
        asyncio.run(search.replace("doc", chunks, np.eye(4).tolist(), 0))
        asyncio.run(search.replace("doc", chunks[:1], np.eye(4)[:1].tolist(), 4))
        assert list(fake.documents["knowledge"]) == [chunk_key("doc", 0)]
        with pytest.raises(ServiceUnavailable) as caught:
            asyncio.run(_index(fake, key="wrong").search([1.0, 0, 0, 0], 5))
    assert caught.value.code == "search_forbidden" and not caught.value.transient
