"""Azure AI Search backend through the real SDK against a fake of the REST API: the same hits as in memory."""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np
import pytest

from shared.config import Settings
from shared.errors import ServiceUnavailable, Unprocessable
from shared.whatsapp.assistant import Deps, KnowledgeBase
from shared.whatsapp.knowledge import Chunk, VectorIndex
from shared.whatsapp.search_index import AzureSearchIndex, chunk_key, cosine_of
from tests.support.fake_search import FakeSearch


def _index(fake: FakeSearch, key: str | None = None) -> AzureSearchIndex:
    return AzureSearchIndex(Settings.model_validate({
        "AzureWebJobsStorage": "UseDevelopmentStorage=true", "KB_SEARCH_BACKEND": "azure_search",
        "AZURE_SEARCH_ENDPOINT": fake.endpoint, "AZURE_SEARCH_API_KEY": key or fake.api_key}))


def closing(search: AzureSearchIndex, work) -> Any:
    """`asyncio.run(work)`, then the client the run opened is closed: each run has its own loop."""
    async def run() -> Any:
        try:
            return await work
        finally:
            await search.close()

    return asyncio.run(run())


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
            await search.replace("a", chunks[:30], vectors[:30].tolist())
            await search.replace("b", [c.model_copy(update={"index": c.index - 30}) for c in chunks[30:]],
                                 vectors[30:].tolist())
            return [await search.search(q.tolist(), 5) for q in queries]

        remote = closing(search, run())
    for query, hits in zip(queries, remote):
        expected = memory.search(query, k=5)
        assert [(h.doc_id, h.chunk.index) for h in hits] == [(h.doc_id, h.chunk.index) for h in expected]
        assert [h.score for h in hits] == pytest.approx([h.score for h in expected], abs=1e-5)


def test_a_new_version_leaves_no_chunk_of_the_old_one_whatever_was_left_before():
    chunks = [Chunk(index=n, text=f"passage {n}", tokens=2) for n in range(4)]
    with FakeSearch() as fake:
        search = _index(fake)
        closing(search, search.replace("doc", chunks, np.eye(4).tolist()))
        stray = {"id": "stray-9", "doc_id": "doc", "chunk": "{}", "vector": [1, 0, 0, 0]}  # a failed upload's
        fake.documents["knowledge"]["stray-9"] = stray
        closing(search, search.replace("doc", chunks[:1], np.eye(4)[:1].tolist()))
        assert list(fake.documents["knowledge"]) == [chunk_key("doc", 0)]  # the shorter version and no stray
        assert closing(search, search.remove("doc")) == 1 and fake.documents["knowledge"] == {}
        assert closing(search, search.remove("doc")) == 0


def test_a_document_the_service_refuses_fails_the_upload_instead_of_passing_as_done():
    chunks = [Chunk(index=n, text=f"passage {n}", tokens=2) for n in range(3)]
    with FakeSearch() as fake:
        fake.refuse.add(chunk_key("doc", 1))
        with pytest.raises(ServiceUnavailable) as caught:
            closing(search := _index(fake), search.replace("doc", chunks, np.eye(3).tolist()))
    assert caught.value.code == "search_failed" and not caught.value.transient


def test_vectors_of_another_width_are_refused_with_what_to_do_and_a_missing_index_has_nothing_to_remove():
    chunk = [Chunk(index=0, text="passage", tokens=1)]
    with FakeSearch() as fake:
        search = _index(fake)
        assert closing(search, search.remove("never-uploaded")) == 0  # before any index exists
        closing(search, search.replace("doc", chunk, [[1.0, 0.0, 0.0]]))
        with pytest.raises(Unprocessable) as caught:
            closing(search, search.replace("other", chunk, [[1.0, 0.0, 0.0, 0.0]]))
    assert caught.value.code == "search_index_width" and "AZURE_SEARCH_INDEX" in caught.value.message


def test_a_question_embedded_by_another_model_finds_nothing_and_says_what_to_do(caplog):
    chunk = [Chunk(index=0, text="passage", tokens=1)]
    with FakeSearch() as fake:
        search = _index(fake)
        kb = KnowledgeBase(Deps(None, None, None, None, search=search))  # the search backend alone is used

        async def run() -> tuple[list, list, list]:
            before = await kb.search([1.0, 0.0, 0.0])  # no index yet
            await search.replace("doc", chunk, [[1.0, 0.0, 0.0]])
            return before, await kb.search([1.0, 0.0, 0.0, 0.0]), await kb.search([1.0, 0.0, 0.0])

        with caplog.at_level(logging.WARNING):
            before, other, same = closing(search, run())
    assert before == [] and other == [] and [h.doc_id for h in same] == ["doc"]
    assert [r.event for r in caplog.records if hasattr(r, "event")] == ["kb.search.other_model"]


def test_a_refused_key_is_final():
    with FakeSearch() as fake:
        with pytest.raises(ServiceUnavailable) as caught:
            closing(search := _index(fake, key="wrong"), search.search([1.0, 0, 0, 0], 5))
    assert caught.value.code == "search_forbidden" and not caught.value.transient
