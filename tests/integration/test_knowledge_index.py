"""The worker's knowledge index on Azurite follows the document list, reading only what changed."""
from __future__ import annotations

import asyncio
import json

from shared.ai.offline import OfflineProvider
from shared.config import Settings
from shared.storage.blobs import BlobStore
from shared.storage.tables import Tables
from shared.whatsapp.assistant import Deps, KnowledgeBase
from shared.whatsapp.knowledge import packed_vectors
from shared.whatsapp.waha import Waha


class CountingBlobs(BlobStore):
    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.read: list[str] = []

    async def get(self, ref: str) -> bytes:
        self.read.append(ref)
        return await super().get(ref)


def test_index_reads_only_added_or_changed_documents_and_drops_deleted_ones(azurite):
    settings = Settings.model_validate({"AzureWebJobsStorage": azurite.connection_string})
    blobs = CountingBlobs(settings)
    provider = OfflineProvider()
    kb = KnowledgeBase(Deps(Tables(settings), blobs, Waha("http://127.0.0.1:9", ""), provider))
    KnowledgeBase._cache.clear()

    def best(index, question: str) -> str:
        return index.search(provider.embed([question]).value[0], k=1)[0].doc_id

    async def main() -> None:
        await kb.add("rent", "rent.txt", [(1, "The monthly rent is 2,350 EUR, due on the first of each month.")])
        await kb.add("pets", "pets.txt", [(1, "Cats and small dogs are allowed in the flat.")])
        index = await kb.index()
        assert sorted(index.doc_ids) == ["pets", "rent"] and len(blobs.read) == 2
        assert best(index, "How much is the monthly rent?") == "rent"

        assert await kb.index() is index and len(blobs.read) == 2  # nothing changed: nothing read

        await kb.add("pets", "pets.txt", [(1, "No pets at all, sorry.")])
        blobs.read.clear()
        index = await kb.index()
        assert len(blobs.read) == 1 and blobs.read[0].startswith("knowledge/pets.")  # the changed one only
        texts = [h.chunk.text for h in index.search(provider.embed(["pets"]).value[0], k=5)]
        assert any("No pets" in t for t in texts) and not any("Cats" in t for t in texts)  # replaced, not added

        await kb.remove("rent")
        blobs.read.clear()
        index = await kb.index()
        assert index.doc_ids == ["pets"] and blobs.read == []  # deleted: dropped without reading anything

    asyncio.run(main())


def test_a_document_embedded_by_another_model_is_skipped_not_fatal(azurite):
    settings = Settings.model_validate({"AzureWebJobsStorage": azurite.connection_string})
    tables, blobs, provider = Tables(settings), BlobStore(settings), OfflineProvider()
    kb = KnowledgeBase(Deps(tables, blobs, Waha("http://127.0.0.1:9", ""), provider))
    KnowledgeBase._cache.clear()

    async def three_wide(doc_id: str, vector: list[float], updated: float):
        """A document embedded by a 3-dimensional model, stored as `add` stores one."""
        chunk = {"index": 0, "text": f"{doc_id} passage", "tokens": 2}
        await blobs.put("knowledge", f"{doc_id}.json", json.dumps({"chunks": [chunk], **packed_vectors([vector])})
                        .encode(), "application/json")
        await tables.upsert("KnowledgeDocuments", "kb", doc_id, {"id": doc_id, "name": doc_id, "chunks": 1,
                                                                 "updated": updated})
        return await kb.index()

    async def main():
        await kb.add("rent", "rent.txt", [(1, "The monthly rent is 2,350 EUR.")])
        return await three_wide("old", [1.0, 0.0, 0.0], 1.0)

    index = asyncio.run(main())
    assert index.doc_ids == ["rent"]  # the newer document's width wins; the older one is skipped
    assert index.search(provider.embed(["rent"]).value[0], k=1)[0].doc_id == "rent"
    # uploaded after the embedding model changed: the index starts afresh with the new width
    index = asyncio.run(three_wide("new", [0.0, 1.0, 0.0], 4102444800.0))
    assert sorted(index.doc_ids) == ["new", "old"] and index.dim == 3
    # a question embedded by the model of the day finds nothing in a base of another width, and fails no turn
    question = provider.embed(["rent"]).value[0]
    assert len(question) != 3 and asyncio.run(kb.search(question)) == []
    assert [h.doc_id for h in asyncio.run(kb.search([0.0, 1.0, 0.0], k=1))] == ["new"]


def test_after_every_document_is_deleted_the_next_one_sets_the_width(azurite):
    settings = Settings.model_validate({"AzureWebJobsStorage": azurite.connection_string})
    tables, blobs = Tables(settings), BlobStore(settings)
    kb = KnowledgeBase(Deps(tables, blobs, Waha("http://127.0.0.1:9", ""), OfflineProvider()))
    KnowledgeBase._cache.clear()

    async def main():
        await kb.add("rent", "rent.txt", [(1, "The monthly rent is 2,350 EUR.")])
        assert (await kb.index()).dim > 3
        await kb.remove("rent")
        await blobs.put("knowledge", "small.json", json.dumps({
            "chunks": [{"index": 0, "text": "small", "tokens": 1}], **packed_vectors([[1.0, 0.0, 0.0]])}).encode())
        await tables.upsert("KnowledgeDocuments", "kb", "small", {"id": "small", "name": "small", "chunks": 1,
                                                                   "updated": 1.0})
        return await kb.index()

    index = asyncio.run(main())
    assert index.doc_ids == ["small"] and index.dim == 3



def test_the_last_upload_of_a_document_wins_whichever_finishes_last_and_a_delete_stands(azurite):
    """Uploads of one id may finish out of order (a large first version, a corrected second one): the version
    uploaded last stays live. A delete stands against uploads that came before it and finish after it."""
    settings = Settings.model_validate({"AzureWebJobsStorage": azurite.connection_string})
    provider = OfflineProvider()
    kb = KnowledgeBase(Deps(Tables(settings), BlobStore(settings), Waha("http://127.0.0.1:9", ""), provider))
    KnowledgeBase._cache.clear()

    async def texts() -> list[str]:
        index = await kb.index()
        return [h.chunk.text for h in index.search(provider.embed(["hotline"]).value[0], k=5)]

    async def main() -> None:
        await kb.add("hotline", "h.txt", [(1, "The rent hotline is 0800-222-NEW.")], version=2.0)
        await kb.add("hotline", "h.txt", [(1, "The rent hotline is 0800-222-NEW.")], version=2.0)  # run again
        assert any("NEW" in t for t in await texts())  # its chunks are still there
        await kb.add("hotline", "h.txt", [(1, "The rent hotline is 0800-111-OLD.")], version=1.0)  # finished last
        assert [d["id"] for d in await kb.documents()] == ["hotline"]
        assert any("NEW" in t for t in await texts()) and not any("OLD" in t for t in await texts())

        assert await kb.remove("hotline")
        await kb.add("hotline", "h.txt", [(1, "The rent hotline is 0800-333-LATE.")], version=3.0)  # began before
        assert await kb.documents() == [] and await texts() == []
        assert not await kb.remove("hotline")  # gone already: 404 again

        await kb.add("hotline", "h.txt", [(1, "The rent hotline is 0800-444-AGAIN.")])  # uploaded after the delete
        assert [d["id"] for d in await kb.documents()] == ["hotline"] and any("AGAIN" in t for t in await texts())
        assert len(azurite.blob_names("knowledge", "hotline.")) == 1  # only the live version's chunks are kept

    asyncio.run(main())


def test_a_document_with_no_text_changes_nothing(azurite):
    import pytest

    from shared.errors import Unprocessable

    settings = Settings.model_validate({"AzureWebJobsStorage": azurite.connection_string})
    kb = KnowledgeBase(Deps(Tables(settings), BlobStore(settings), Waha("http://127.0.0.1:9", ""), OfflineProvider()))

    async def main() -> None:
        await kb.add("prices", "p.txt", [(1, "A kayak costs 30 EUR a day.")])
        with pytest.raises(Unprocessable) as refused:
            await kb.add("prices", "p.pdf", [(1, "  "), (2, "")])  # a scan: no text layer
        assert refused.value.code == "document_has_no_text"
        assert [d["chunks"] for d in await kb.documents()] == [1]

    asyncio.run(main())


def test_an_upload_run_again_after_a_cancel_leaves_the_version_that_went_live_alone(azurite):
    settings = Settings.model_validate({"AzureWebJobsStorage": azurite.connection_string})
    provider = OfflineProvider()
    kb = KnowledgeBase(Deps(Tables(settings), BlobStore(settings), Waha("http://127.0.0.1:9", ""), provider))
    KnowledgeBase._cache.clear()

    async def canceled() -> bool:
        return False

    async def main() -> list:
        import pytest

        from shared.errors import Unprocessable

        await kb.add("boats", "b.txt", [(1, "Boat tours cost 50 EUR.")], version=5.0)
        with pytest.raises(Unprocessable):  # the same upload's activity once more, its job canceled since
            await kb.add("boats", "b.txt", [(1, "Boat tours cost 50 EUR.")], version=5.0, still_wanted=canceled)
        index = await kb.index()
        return [h.chunk.text for h in index.search(provider.embed(["boat tours"]).value[0], k=1)]

    assert asyncio.run(main()) == ["Boat tours cost 50 EUR."]
    assert not asyncio.run(kb.remove("never-uploaded")) and azurite.blob_names("knowledge", "never") == []
