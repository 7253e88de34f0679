"""The Haystack components on a tiny corpus (real haystack-ai, qdrant-haystack, MiniLM)."""

from __future__ import annotations

import os

os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")  # no network here

import asyncio

import numpy as np
import numpy.typing as npt
import pytest
from haystack import Document as HaystackDocument
from haystack_integrations.components.retrievers.qdrant import QdrantEmbeddingRetriever
from haystack_integrations.document_stores.qdrant import QdrantDocumentStore

from prime_retriever import PredictiveRetriever, PredictorError, TextEncoder
from prime_retriever.integrations.haystack import PredictiveQueryEmbedder, PrimeDocumentEmbedder, PrimeRetriever

DOCS = [
    HaystackDocument(id="demon", content="Demon Dice is a collectible dice game by Lester Smith.",
                     meta={"title": "Demon Dice", "kind": "game"}),
    HaystackDocument(id="smith", content="Lester Smith designed Dragon Dice for TSR.", meta={"title": "Lester Smith"}),
    HaystackDocument(id="dragon", content="Dragon Dice is a dice game published by TSR.",
                     meta={"title": "Dragon Dice", "kind": "game"}),
]
CONTEXT = ["user: I played Demon Dice.", "assistant: What would you like to know?"]


def _vectors(docs: list[HaystackDocument]) -> npt.NDArray[np.float32]:
    assert all(d.embedding is not None for d in docs)
    return np.asarray([d.embedding for d in docs], dtype=np.float32)  # n × D


def _embedder(minilm: TextEncoder) -> PrimeDocumentEmbedder:
    e = PrimeDocumentEmbedder()
    e.use_encoder(minilm)
    return e


async def test_documents_embed_as_prime_indexes(minilm: TextEncoder) -> None:
    out = _embedder(minilm).run(DOCS)["documents"]
    want = np.asarray(minilm.encode([f"{d.meta['title']}: {d.content}" for d in DOCS], batch_size=8,
                                    show_progress=False))
    np.testing.assert_allclose(_vectors(out), want, atol=1e-6)
    assert DOCS[0].embedding is None and out[0].meta == DOCS[0].meta  # the inputs are left as they were
    again = (await _embedder(minilm).run_async(DOCS[:1]))["documents"]
    np.testing.assert_allclose(_vectors(again)[0], want[0], atol=1e-6)
    plain = PrimeDocumentEmbedder(meta_fields_to_embed=[], embedding_separator="\n", batch_size=4)
    assert PrimeDocumentEmbedder.from_dict(plain.to_dict()).to_dict() == plain.to_dict()
    plain.warm_up()  # loads the bundled encoder
    np.testing.assert_allclose(_vectors(plain.run(DOCS[:1])["documents"])[0],
                               np.asarray(minilm.encode([DOCS[0].content or ""], batch_size=1, show_progress=False))[0],
                               atol=1e-5)


def test_sync_and_async_paths(minilm: TextEncoder) -> None:
    store = QdrantDocumentStore(location=":memory:", index="h", embedding_dim=384, similarity="cosine")
    store.write_documents(_embedder(minilm).run(DOCS)["documents"])
    embedder, full = PredictiveQueryEmbedder(document_store=store), PrimeRetriever(document_store=store, top_k=2)
    for c in (embedder, full):
        c.use_encoder(minilm)
    games = {"field": "meta.kind", "operator": "==", "value": "game"}
    try:
        with pytest.warns(UserWarning, match="no checkpoint"):
            vector = embedder.run("Who designed it?", CONTEXT, filters=games)["embedding"]
        stock = QdrantEmbeddingRetriever(document_store=store, top_k=2, filters=games)
        found = stock.run(query_embedding=vector)["documents"]
        with pytest.warns(UserWarning, match="no checkpoint"):
            docs = full.run("Who designed it?", CONTEXT, filters=games)["documents"]
        assert [d.id for d in docs] == [d.id for d in found] and {d.meta["kind"] for d in docs} == {"game"}
        assert docs[0].meta["prime_source"] == "predicted" and docs[0].score == pytest.approx(found[0].score)
        assert full.run(context=CONTEXT, session_id="s") == {"documents": []}  # a PREPARE, scheduled
        assert full.prepare_soon("s2", CONTEXT, filters=games).result(timeout=60).source == "predicted"
        with pytest.raises(PredictorError):
            full.run(session_id="s")
    finally:
        embedder.close()
        full.close()


async def test_async_path_writes_and_reads_through_the_async_client(minilm: TextEncoder) -> None:
    store = QdrantDocumentStore(location=":memory:", index="ha", embedding_dim=384, similarity="cosine")
    await store.write_documents_async(_embedder(minilm).run(DOCS)["documents"])
    embedder, full = PredictiveQueryEmbedder(document_store=store), PrimeRetriever(document_store=store, top_k=2)
    for c in (embedder, full):
        c.use_encoder(minilm)
    try:
        with pytest.warns(UserWarning, match="no checkpoint"):
            vector = (await embedder.run_async("Who designed it?", CONTEXT))["embedding"]
            docs = (await full.run_async("Who designed it?", CONTEXT))["documents"]
        found = (await QdrantEmbeddingRetriever(document_store=store, top_k=2).run_async(
            query_embedding=vector))["documents"]
        assert [d.id for d in docs] == [d.id for d in found]
        assert await full.run_async(context=CONTEXT, session_id="s") == {"documents": []}

        async def prepared(rt: PredictiveRetriever) -> bool:
            return "s" in rt.cache

        for _ in range(600):  # the PREPARE runs on the retriever's thread: wait for it
            if await full.thread(True).acall(prepared):
                break
            await asyncio.sleep(0.1)
        assert await full.thread(True).acall(prepared)
    finally:
        embedder.close()
        full.close()
