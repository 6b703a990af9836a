"""The knowledge base in Azure AI Search, for bases too large for a worker's memory: exact cosine k-NN, same hits."""
from __future__ import annotations

import asyncio
import json
import weakref
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

from ..config import Settings
from ..errors import ServiceUnavailable, Unprocessable
from ..identity import app_credential
from .knowledge import Chunk, Hit

_PROFILE, _ALGORITHM = "exact-cosine", "exhaustive-knn"
BATCH_DOCUMENTS = 100  # 1,536 floats are ~33 KB of JSON: 100 chunks stay far below the 16 MB request limit


def chunk_key(doc_id: str, index: int) -> str:
    """Document keys allow letters, digits, _ - =: a document id is hex-encoded to stay one."""
    return f"{doc_id.encode().hex()}-{index}"


def cosine_of(score: float) -> float:
    """Azure AI Search scores a cosine match as 1 / (1 + (1 - cos)); the hits keep cosine, as in memory."""
    return 2.0 - 1.0 / score if score > 0 else -1.0


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@contextmanager
def _service_errors() -> Iterator[None]:
    """The search service's failures as our errors: a refused key is final, an outage worth retrying."""
    from azure.core.exceptions import HttpResponseError, ServiceRequestError

    try:
        yield
    except ServiceRequestError:
        raise ServiceUnavailable("Azure AI Search cannot be reached.", code="search_unreachable",
                                 transient=True) from None
    except HttpResponseError as error:
        status = error.status_code or 0
        if status in (401, 403):
            raise ServiceUnavailable("Azure AI Search refused the app's key or identity.",
                                     code="search_forbidden") from None
        raise ServiceUnavailable(f"Azure AI Search answered {status}: {error.message}"[:300], code="search_failed",
                                 transient=status == 429 or status >= 500) from None


class AzureSearchIndex:
    """One search document per chunk: key, the document id (filterable), the chunk as JSON, and its vector."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.endpoint = settings.azure_search_endpoint.rstrip("/")
        self.index_name = settings.azure_search_index
        # one documents client per event loop, its connections kept open; a loop's own go with it
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
        self._width: int | None = None  # the index's vector width, once seen (it never changes)

    def _credential(self) -> Any:
        key = self.settings.azure_search_api_key.get_secret_value()
        if key:
            from azure.core.credentials import AzureKeyCredential

            return AzureKeyCredential(key)
        return app_credential(self.settings.azure_client_id)

    def _documents(self) -> Any:
        from azure.search.documents.aio import SearchClient

        loop = asyncio.get_running_loop()
        if loop not in self._clients:
            self._clients[loop] = SearchClient(self.endpoint, self.index_name, self._credential())
        return self._clients[loop]

    async def close(self) -> None:
        """Closes this event loop's documents client: a script's or a test's end (the worker keeps it for life)."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.close()

    async def width(self) -> int | None:
        """The width of the index's vectors; None while there is no index."""
        from azure.core.exceptions import ResourceNotFoundError
        from azure.search.documents.indexes.aio import SearchIndexClient

        if self._width is None:
            with _service_errors():
                async with SearchIndexClient(self.endpoint, self._credential()) as client:
                    try:
                        existing = await client.get_index(self.index_name)
                    except ResourceNotFoundError:
                        return None
            self._width = next((f.vector_search_dimensions for f in existing.fields if f.name == "vector"), None)
        return self._width

    async def ensure(self, dim: int) -> None:
        """Creates the index on the first upload. Its vector width is fixed: vectors of another width (the embedding
        model changed) are refused with what to do, rather than failing every question later."""
        from azure.search.documents.indexes.aio import SearchIndexClient
        from azure.search.documents.indexes.models import (ExhaustiveKnnAlgorithmConfiguration,
                                                           ExhaustiveKnnParameters, SearchField, SearchFieldDataType,
                                                           SearchIndex, SimpleField, VectorSearch,
                                                           VectorSearchAlgorithmMetric, VectorSearchProfile)

        width = await self.width()
        if width is not None and width != dim:
            raise Unprocessable(
                f"The search index '{self.index_name}' holds {width}-dimensional vectors; the embedding model makes "
                f"{dim}. Set AZURE_SEARCH_INDEX to a new index and upload the documents again.",
                code="search_index_width")
        if width is not None:
            return
        with _service_errors():
            async with SearchIndexClient(self.endpoint, self._credential()) as client:
                await client.create_or_update_index(SearchIndex(name=self.index_name, fields=[
                    SimpleField(name="id", type=SearchFieldDataType.String, key=True),
                    SimpleField(name="doc_id", type=SearchFieldDataType.String, filterable=True),
                    SimpleField(name="chunk", type=SearchFieldDataType.String),
                    SearchField(name="vector", type=SearchFieldDataType.Collection(SearchFieldDataType.Single),
                                searchable=True, vector_search_dimensions=dim, vector_search_profile_name=_PROFILE)],
                    vector_search=VectorSearch(
                        algorithms=[ExhaustiveKnnAlgorithmConfiguration(
                            name=_ALGORITHM, parameters=ExhaustiveKnnParameters(
                                metric=VectorSearchAlgorithmMetric.COSINE))],
                        profiles=[VectorSearchProfile(name=_PROFILE, algorithm_configuration_name=_ALGORITHM)])))
        self._width = dim

    async def _keys(self, client: Any, doc_id: str) -> set[str]:
        """Every search document of `doc_id`, whatever earlier uploads or failures left behind."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            results = await client.search(search_text="*", filter=f"doc_id eq {_quoted(doc_id)}", select=["id"])
            return {r["id"] async for r in results}
        except ResourceNotFoundError:  # no index yet: nothing of it
            return set()

    @staticmethod
    async def _apply(client: Any, actions: list[dict], delete: bool = False) -> None:
        """Batches of documents; a document the service did not take fails the whole upload (409, 422 and 503
        per document are worth another try)."""
        for start in range(0, len(actions), BATCH_DOCUMENTS):
            batch = actions[start:start + BATCH_DOCUMENTS]
            results = await (client.delete_documents(batch) if delete else client.merge_or_upload_documents(batch))
            failed = [r for r in results if not r.succeeded]
            if failed:
                transient = all(r.status_code in (409, 422, 503) for r in failed)
                raise ServiceUnavailable(f"Azure AI Search did not take {len(failed)} of {len(batch)} documents: "
                                         f"{failed[0].error_message}"[:300], code="search_failed",
                                         transient=transient)

    async def replace(self, doc_id: str, chunks: Sequence[Chunk], vectors: Sequence[Sequence[float]]) -> None:
        """The document's chunks; any others it had (a longer earlier version, a failed upload) are deleted."""
        if chunks:
            await self.ensure(len(vectors[0]))
        documents = [{"id": chunk_key(doc_id, c.index), "doc_id": doc_id, "chunk": json.dumps(c.model_dump()),
                      "vector": [float(x) for x in v]} for c, v in zip(chunks, vectors)]
        client = self._documents()
        with _service_errors():
            await self._apply(client, documents)
            stale = await self._keys(client, doc_id) - {d["id"] for d in documents}
            await self._apply(client, [{"id": key} for key in sorted(stale)], delete=True)

    async def remove(self, doc_id: str) -> int:
        """Deletes every search document of `doc_id`; how many there were."""
        client = self._documents()
        with _service_errors():
            keys = await self._keys(client, doc_id)
            await self._apply(client, [{"id": key} for key in sorted(keys)], delete=True)
        return len(keys)

    async def search(self, vector: Sequence[float], k: int) -> list[Hit]:
        from azure.core.exceptions import ResourceNotFoundError
        from azure.search.documents.models import VectorizedQuery

        query = VectorizedQuery(vector=[float(x) for x in vector], k_nearest_neighbors=k, fields="vector")
        client = self._documents()
        with _service_errors():
            try:
                results = await client.search(search_text=None, vector_queries=[query], top=k,
                                              select=["doc_id", "chunk"])
                return [Hit(doc_id=r["doc_id"], chunk=Chunk(**json.loads(r["chunk"])),
                            score=cosine_of(r["@search.score"])) async for r in results]
            except ResourceNotFoundError:  # no document uploaded yet: no index either
                return []
