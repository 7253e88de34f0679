"""Shared by the store tests: the embedded corpus and stores holding it, on each backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from prime_retriever.stores.base import VectorStore
from prime_retriever.stores.edge import EdgeStore
from prime_retriever.stores.qdrant import QdrantStore
from tests.prime_retriever.stores.test_contract import Corpus, load, load_corpus


@pytest.fixture(scope="session")
def corpus() -> Corpus:
    return load_corpus()


@pytest.fixture
async def local_store(corpus: Corpus) -> AsyncIterator[QdrantStore]:
    store = QdrantStore("docs", location=":memory:", upsert_batch_size=64)
    await load(store, corpus)
    yield store
    await store.close()


@pytest.fixture
async def edge_store(corpus: Corpus, tmp_path: Path) -> AsyncIterator[EdgeStore]:
    store = EdgeStore(tmp_path / "shard", upsert_batch_size=64)
    await load(store, corpus)
    await store.optimize()
    yield store
    await store.close()


@pytest.fixture(params=["local", "edge"])
def store(request: pytest.FixtureRequest) -> VectorStore:
    """Each backend in turn, holding the corpus: ``local_store``, then ``edge_store`` (optimized)."""
    s: VectorStore = request.getfixturevalue(f"{request.param}_store")
    return s
