"""The knowledge base in Azure AI Search, for bases too large for a worker's memory: exact cosine k-NN, same hits."""
from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

from ..config import Settings
from ..errors import ServiceUnavailable
from .knowledge import Chunk, Hit

_PROFILE, _ALGORITHM = "exact-cosine", "exhaustive-knn"


def chunk_key(doc_id: str, index: int) -> str:
    """Document keys allow letters, digits, _ - =: a document id is hex-encoded to stay one."""
    return f"{doc_id.encode().hex()}-{index}"


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
        raise ServiceUnavailable(f"Azure AI Search answered {status}.", code="search_failed",
                                 transient=status == 429 or status >= 500) from None


def cosine_of(score: float) -> float:
    """Azure AI Search scores a cosine match as 1 / (1 + (1 - cos)); the hits keep cosine, as in memory."""
    return 2.0 - 1.0 / score if score > 0 else -1.0


class AzureSearchIndex:
    """One search document per chunk: key, the document id (filterable), the chunk as JSON, and its vector."""

    def __init__(self, settings: Settings) -> None:
        self.endpoint = settings.azure_search_endpoint.rstrip("/")
        self.index_name = settings.azure_search_index
        key = settings.azure_search_api_key.get_secret_value()
        if key:
            from azure.core.credentials import AzureKeyCredential

            self.credential: Any = AzureKeyCredential(key)
        else:
            from azure.identity.aio import DefaultAzureCredential

            self.credential = DefaultAzureCredential(managed_identity_client_id=settings.azure_client_id or None)

    def _documents(self) -> Any:
        from azure.search.documents.aio import SearchClient

        return SearchClient(self.endpoint, self.index_name, self.credential)

    async def ensure(self, dim: int) -> None:
        """Creates the index, or updates it in place (fields can be added, not changed)."""
        from azure.search.documents.indexes.aio import SearchIndexClient
        from azure.search.documents.indexes.models import (ExhaustiveKnnAlgorithmConfiguration,
                                                           ExhaustiveKnnParameters, SearchField, SearchFieldDataType,
                                                           SearchIndex, SimpleField, VectorSearch,
                                                           VectorSearchAlgorithmMetric, VectorSearchProfile)

        index = SearchIndex(name=self.index_name, fields=[
            SimpleField(name="id", type=SearchFieldDataType.String, key=True),
            SimpleField(name="doc_id", type=SearchFieldDataType.String, filterable=True),
            SimpleField(name="chunk", type=SearchFieldDataType.String),
            SearchField(name="vector", type=SearchFieldDataType.Collection(SearchFieldDataType.Single),
                        searchable=True, vector_search_dimensions=dim, vector_search_profile_name=_PROFILE)],
            vector_search=VectorSearch(
                algorithms=[ExhaustiveKnnAlgorithmConfiguration(name=_ALGORITHM, parameters=ExhaustiveKnnParameters(
                    metric=VectorSearchAlgorithmMetric.COSINE))],
                profiles=[VectorSearchProfile(name=_PROFILE, algorithm_configuration_name=_ALGORITHM)]))
        with _service_errors():
            async with SearchIndexClient(self.endpoint, self.credential) as client:
                await client.create_or_update_index(index)

    async def replace(self, doc_id: str, chunks: Sequence[Chunk], vectors: Sequence[Sequence[float]],
                      previous_count: int) -> None:
        """The document's chunks; those of an earlier, longer version beyond the new count are deleted."""
        if chunks:
            await self.ensure(len(vectors[0]))
        batch = [{"id": chunk_key(doc_id, c.index), "doc_id": doc_id, "chunk": json.dumps(c.model_dump()),
                  "vector": [float(x) for x in v]} for c, v in zip(chunks, vectors)]
        stale = [{"id": chunk_key(doc_id, n)} for n in range(len(chunks), previous_count)]
        with _service_errors():
            async with self._documents() as client:
                for start in range(0, len(batch), 500):  # a batch may hold 1,000 actions and 16 MB
                    await client.merge_or_upload_documents(batch[start:start + 500])
                if stale:
                    await client.delete_documents(stale)

    async def remove(self, doc_id: str, count: int) -> None:
        if count:
            with _service_errors():
                async with self._documents() as client:
                    await client.delete_documents([{"id": chunk_key(doc_id, n)} for n in range(count)])

    async def search(self, vector: Sequence[float], k: int) -> list[Hit]:
        from azure.core.exceptions import ResourceNotFoundError
        from azure.search.documents.models import VectorizedQuery

        query = VectorizedQuery(vector=[float(x) for x in vector], k_nearest_neighbors=k, fields="vector")
        with _service_errors():
            async with self._documents() as client:
                try:
                    results = await client.search(search_text=None, vector_queries=[query], top=k,
                                                  select=["doc_id", "chunk"])
                    return [Hit(doc_id=r["doc_id"], chunk=Chunk(**json.loads(r["chunk"])),
                                score=cosine_of(r["@search.score"])) async for r in results]
                except ResourceNotFoundError:  # no document uploaded yet: no index either
                    return []
