"""Server tests of :class:`QdrantStore`: the congruence checks of ``test_store.py`` against a real Qdrant server.

Run with a server up (``docker compose up -d``) and ``QDRANT_URL=http://localhost:6333``; skipped otherwise.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest
from qdrant_client import models

from prime_retriever.errors import StoreError
from prime_retriever.stores.qdrant import QdrantStore
from tests.prime_retriever.stores.test_contract import Corpus, K, assert_same_ranking, exact_top_k, load, load_corpus

pytestmark = pytest.mark.server

QDRANT_URL = os.environ.get("QDRANT_URL")


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    if not QDRANT_URL:
        pytest.skip("QDRANT_URL is not set: no Qdrant server to test against (see docker-compose.yml)")
    return load_corpus()


@pytest.fixture
async def server_store(corpus: Corpus) -> AsyncIterator[QdrantStore]:
    assert QDRANT_URL is not None
    name = f"prime_test_{uuid.uuid4().hex[:8]}"
    store = QdrantStore(name, url=QDRANT_URL, api_key=os.environ.get("QDRANT_API_KEY"), timeout=30)
    await load(store, corpus)
    yield store
    await store._client.delete_collection(name)
    await store.close()


@pytest.fixture
async def local_store(corpus: Corpus) -> AsyncIterator[QdrantStore]:
    store = QdrantStore("docs", location=":memory:")
    await load(store, corpus)
    yield store
    await store.close()


async def test_server_matches_local(server_store: QdrantStore, local_store: QdrantStore, corpus: Corpus) -> None:
    assert await server_store.count() == len(corpus.ids)
    for q in corpus.queries:
        assert_same_ranking(await local_store.search(q, K), await server_store.search(q, K))
    batch = await server_store.search_batch(corpus.queries, K)
    for q, hits in zip(corpus.queries, batch, strict=True):
        assert_same_ranking(await local_store.search(q, K), hits)


async def test_server_filters_reupsert_and_metadata(server_store: QdrantStore, corpus: Corpus) -> None:
    q = corpus.queries[0]
    excl = [h.doc_id for h in await server_store.search(q, 2)]
    assert [h.doc_id for h in await server_store.search(q, K, exclude_ids=excl)][:3] == exact_top_k(
        corpus, q, 3, skip=set(excl)
    )
    letter = corpus.payloads[0]["letter"]
    flt = models.Filter(must=[models.FieldCondition(key="letter", match=models.MatchValue(value=letter))])
    assert all(h.payload["letter"] == letter for h in await server_store.search(q, K, filter=flt))
    await server_store.upsert(corpus.ids[:20], corpus.vectors[:20], corpus.payloads[:20])
    assert await server_store.count() == len(corpus.ids)
    assert await server_store.existing_ids([*corpus.ids[:3], "missing"]) == set(corpus.ids[:3])
    other = QdrantStore(server_store.collection, url=QDRANT_URL, timeout=30)
    with pytest.raises(StoreError, match="bge-base"):
        await other.ensure_collection(768, "bge-base")
    await other.close()
