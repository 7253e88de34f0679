"""Indexing on real components: MiniLM (embeddings cached on disk), Qdrant local mode and Qdrant Edge."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from prime_retriever.errors import StoreError
from prime_retriever.retrieval.indexing import index_documents
from prime_retriever.stores.base import VectorStore
from prime_retriever.stores.edge import EdgeStore
from prime_retriever.stores.qdrant import QdrantStore
from prime_retriever.text.embedding_cache import CachedEncoder
from tests.prime_retriever.retrieval.test_retriever import (
    cached_encoder,
    embedding_cache_dir,
    hotpot_sample,
)

N = 120


class Interrupted(Exception):
    pass


class RenamedEncoder:
    """The real encoder under another name: a different Y-Encoder as far as the store can tell."""

    def __init__(self, inner: CachedEncoder, name: str) -> None:
        self.inner = inner
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    @property
    def dim(self) -> int:
        return self.inner.dim

    def encode(
        self, texts: Sequence[str], batch_size: int = 64, show_progress: bool | None = None
    ) -> npt.NDArray[np.float32]:
        return self.inner.encode(texts, batch_size, show_progress)


@pytest.fixture
def encoder(pytestconfig: pytest.Config) -> CachedEncoder:
    return cached_encoder(embedding_cache_dir(pytestconfig))


@pytest.fixture(params=["local", "edge"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> object:
    def make() -> VectorStore:
        if request.param == "local":
            return QdrantStore("docs", path=str(tmp_path / "qdrant"))
        return EdgeStore(tmp_path / "edge")

    return make


async def test_index_interrupt_and_resume(encoder: CachedEncoder, make_store: object) -> None:
    docs = hotpot_sample().docs[:N]
    store: VectorStore = make_store()  # type: ignore[operator]

    def stop_after_two(batch: int, done: int) -> None:
        if batch == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        await index_documents(store, docs, encoder=encoder, batch_size=40, progress=False, on_batch=stop_after_two)
    assert await store.count() == 80
    await store.close()

    store = make_store()  # type: ignore[operator]
    before = encoder.encoded_texts + encoder.cache_hits
    report = await index_documents(store, docs, encoder=encoder, batch_size=40, progress=False)
    assert (report.skipped_existing, report.indexed, report.batches) == (80, 40, 1)
    assert encoder.encoded_texts + encoder.cache_hits - before == 40  # only the rest was encoded
    assert report.count_after == N == await store.count()
    again = await index_documents(store, docs + docs[:5], encoder=encoder, progress=False)
    assert (again.indexed, again.skipped_existing, again.duplicates, again.count_after) == (0, N, 5, N)
    # payloads and vectors are right: a document finds itself first
    vec = encoder.encode([docs[17].encoding_text])[0]
    hit = (await store.search(vec, 1))[0]
    assert hit.doc_id == docs[17].id and hit.score == pytest.approx(1.0, abs=1e-4)
    assert hit.payload["title"] == docs[17].title and hit.payload["text"] == docs[17].text
    await store.close()


async def test_reindexing_overwrites_never_duplicates(encoder: CachedEncoder) -> None:
    docs = hotpot_sample().docs[:30]
    async with QdrantStore("docs", location=":memory:") as store:
        await index_documents(store, docs, encoder=encoder, progress=False)
        await store.upsert([docs[0].id], encoder.encode([docs[0].encoding_text]), [docs[0].payload()])
        assert await store.count() == 30


async def test_a_resumed_run_with_nothing_left_still_builds_the_index(encoder: CachedEncoder, tmp_path: Path) -> None:
    """A run interrupted after its last upsert never reached optimize(); the re-run indexes nothing
    new but must still build Qdrant Edge's HNSW index."""
    docs = hotpot_sample().docs[:40]
    async with EdgeStore(tmp_path / "edge") as store:
        await index_documents(store, docs, encoder=encoder, progress=False, optimize=False)
        assert store.optimize_pid is None
        report = await index_documents(store, docs, encoder=encoder, progress=False)
        assert report.indexed == 0 and report.skipped_existing == 40
        assert store.optimize_pid is not None  # optimize() ran (in its child process)
        vec = encoder.encode([docs[3].encoding_text])[0]
        assert (await store.search(vec, 1))[0].doc_id == docs[3].id


async def test_refuses_to_mix_encoders(encoder: CachedEncoder) -> None:
    docs = hotpot_sample().docs[:10]
    async with QdrantStore("docs", location=":memory:") as store:
        await index_documents(store, docs, encoder=encoder, progress=False)
        with pytest.raises(StoreError, match="other-encoder"):
            await index_documents(store, docs, encoder=RenamedEncoder(encoder, "other-encoder"), progress=False)
