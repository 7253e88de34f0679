"""Haystack: a collection built by a Haystack indexing pipeline, searched through our components in stock
query pipelines, gives exactly ``PredictiveRetriever.search`` over prime's own store of the same corpus."""

from __future__ import annotations

import os

os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")  # no network here

import asyncio
import zlib
from typing import Any

import pytest
from haystack import Document as HaystackDocument
from haystack import Pipeline, component
from haystack.components.writers import DocumentWriter
from haystack.dataclasses import SparseEmbedding
from haystack_integrations.components.retrievers.qdrant import (
    QdrantEmbeddingRetriever,
    QdrantHybridRetriever,
    QdrantSparseEmbeddingRetriever,
)
from haystack_integrations.document_stores.qdrant import QdrantDocumentStore
from qdrant_client import models

from integration_tests.conftest import assert_example_runs
from prime_retriever import Document, HFTextEncoder, PredictiveRetriever, PredictorError
from prime_retriever.integrations.haystack import (
    PredictiveQueryEmbedder,
    PrimeDocumentEmbedder,
    PrimeRetriever,
)
from tests.prime_retriever.integrations.fixtures import Conversation, K, assert_same_hits, linked_backend, prime_search

pytestmark = pytest.mark.slow


def _haystack_docs(corpus: list[Document]) -> list[HaystackDocument]:
    return [HaystackDocument(id=d.id, content=d.text, meta={"title": d.title}) for d in corpus]


def _store(index: str) -> QdrantDocumentStore:
    return QdrantDocumentStore(location=":memory:", index=index, embedding_dim=384, similarity="cosine")


def _indexing(store: QdrantDocumentStore, encoder: HFTextEncoder, pipeline: Pipeline) -> None:
    embedder = PrimeDocumentEmbedder()
    embedder.use_encoder(encoder)
    pipeline.add_component("embedder", embedder)
    pipeline.add_component("writer", DocumentWriter(document_store=store))
    pipeline.connect("embedder.documents", "writer.documents")


def _with_test_predictor(component: PredictiveQueryEmbedder | PrimeRetriever, encoder: HFTextEncoder) -> None:
    """Serve the test's random predictor (no checkpoint at hand): the same weights as the reference."""
    component.use_encoder(encoder)
    component.use_backend(linked_backend())


async def _indexed_store(index: str, corpus: list[Document], encoder: HFTextEncoder, *,
                         use_async: bool = False) -> QdrantDocumentStore:
    """A store holding ``corpus``, written by a Haystack indexing pipeline (run in a thread, or ``run_async``)."""
    store = _store(index)
    indexing = Pipeline()
    _indexing(store, encoder, indexing)
    data: dict[str, Any] = {"embedder": {"documents": _haystack_docs(corpus)}}
    if use_async:
        await indexing.run_async(data)
    else:
        await _thread_run(indexing, data)
    return store


def _full_retriever(store: QdrantDocumentStore, encoder: HFTextEncoder) -> PrimeRetriever:
    full = PrimeRetriever(document_store=store, top_k=K)
    _with_test_predictor(full, encoder)
    return full


def _query_pipeline(store: QdrantDocumentStore, encoder: HFTextEncoder) -> tuple[Pipeline, PredictiveQueryEmbedder]:
    """A stock query pipeline: our query embedder feeding Haystack's own Qdrant embedding retriever."""
    pipeline = Pipeline()
    embedder = PredictiveQueryEmbedder(document_store=store)
    _with_test_predictor(embedder, encoder)
    pipeline.add_component("embedder", embedder)
    pipeline.add_component("retriever", QdrantEmbeddingRetriever(document_store=store, top_k=K))
    pipeline.connect("embedder.embedding", "retriever.query_embedding")
    return pipeline, embedder


def _pairs(docs: list[HaystackDocument]) -> list[tuple[str, float]]:
    return [(d.id, float(d.score or 0.0)) for d in docs]


async def test_sync_pipelines_equal_prime_search(corpus: list[Document], convs: list[Conversation],
                                                 encoder: HFTextEncoder) -> None:
    store = await _indexed_store("hay_sync", corpus, encoder)
    assert store.count_documents() == len(corpus)
    query, embedder = _query_pipeline(store, encoder)
    full = _full_retriever(store, encoder)
    reference = await prime_search(corpus, encoder, convs)
    try:
        for conv, ref in zip(convs, reference, strict=True):
            out = await _thread_run(query, {"embedder": {"query": conv.query, "context": conv.context}})
            assert_same_hits(_pairs(out["retriever"]["documents"]), ref)
            docs = (await _thread_call(full.run, conv.query, conv.context))["documents"]
            assert_same_hits(_pairs(docs), ref)
            assert {d.meta["prime_source"] for d in docs} == {"predicted"}
            assert docs[0].meta["title"] == ref[0].title and docs[0].content == ref[0].text
        # a run without a query is a PREPARE: scheduled, it returns at once and warms the session's cache
        assert full.run(context=convs[0].context, session_id="s1") == {"documents": []}
        assert await _eventually_prepared(full, "s1")
    finally:
        embedder.close()
        full.close()


async def _eventually_prepared(component: PrimeRetriever, session_id: str) -> bool:
    async def has(rt: PredictiveRetriever) -> bool:
        return session_id in rt.cache

    for _ in range(600):  # the PREPARE runs on the retriever's thread; wait for it (up to a minute)
        if component.thread(False).call(has):
            return True
        await asyncio.sleep(0.1)
    return False


async def _thread_run(pipeline: Pipeline, data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = await asyncio.to_thread(pipeline.run, data)
    return out


async def _thread_call(fn: object, *args: object) -> dict[str, list[HaystackDocument]]:
    out: dict[str, list[HaystackDocument]] = await asyncio.to_thread(fn, *args)  # type: ignore[arg-type]
    return out


async def test_async_pipelines_equal_prime_search(corpus: list[Document], convs: list[Conversation],
                                                  encoder: HFTextEncoder) -> None:
    # local mode: what the async client writes, only the async client sees
    store = await _indexed_store("hay_async", corpus, encoder, use_async=True)
    query, embedder = _query_pipeline(store, encoder)
    full = _full_retriever(store, encoder)
    reference = await prime_search(corpus, encoder, convs)
    try:
        for conv, ref in zip(convs, reference, strict=True):
            out = await query.run_async({"embedder": {"query": conv.query, "context": conv.context}})
            assert_same_hits(_pairs(out["retriever"]["documents"]), ref)
            docs = (await full.run_async(conv.query, conv.context))["documents"]
            assert_same_hits(_pairs(docs), ref)
    finally:
        embedder.close()
        full.close()


async def test_filters_restrict_hits_and_link_expansion(corpus: list[Document], convs: list[Conversation],
                                                        encoder: HFTextEncoder) -> None:
    store = await _indexed_store("hay_filter", corpus, encoder)
    titles = [corpus[i].title for i in range(0, 40, 2)]
    hay = {"field": "meta.title", "operator": "in", "value": titles}
    prime = models.Filter(must=[models.FieldCondition(key="title", match=models.MatchAny(any=titles))])
    full = _full_retriever(store, encoder)
    reference = await prime_search(corpus, encoder, convs, filter=prime)
    try:
        for conv, ref in zip(convs, reference, strict=True):
            docs = (await _thread_call(full.run, conv.query, conv.context, hay))["documents"]
            assert {d.meta["title"] for d in docs} <= set(titles)
            assert_same_hits(_pairs(docs), ref)
    finally:
        full.close()


@component
class _HashingSparseEmbedder:
    """A bag-of-words sparse embedding (hashed words), to give the hybrid store its sparse half."""

    @component.output_types(documents=list[HaystackDocument])
    def run(self, documents: list[HaystackDocument]) -> dict[str, list[HaystackDocument]]:
        for d in documents:
            d.sparse_embedding = _sparse(d.content or "")
        return {"documents": documents}


def _sparse(text: str) -> SparseEmbedding:
    counts: dict[int, float] = {}
    for w in text.lower().split():
        h = zlib.crc32(w.encode()) % 100_000
        counts[h] = counts.get(h, 0.0) + 1.0
    return SparseEmbedding(indices=list(counts), values=list(counts.values()))


async def test_hybrid_store_dense_and_fused(corpus: list[Document], convs: list[Conversation],
                                            encoder: HFTextEncoder) -> None:
    store = QdrantDocumentStore(location=":memory:", index="hay_hybrid", embedding_dim=384, similarity="cosine",
                                use_sparse_embeddings=True)  # the dense vector is now named "text-dense"
    indexing = Pipeline()
    dense_embedder = PrimeDocumentEmbedder()
    dense_embedder.use_encoder(encoder)
    indexing.add_component("embedder", dense_embedder)
    indexing.add_component("sparse", _HashingSparseEmbedder())
    indexing.add_component("writer", DocumentWriter(document_store=store))
    indexing.connect("embedder.documents", "sparse.documents")
    indexing.connect("sparse.documents", "writer.documents")
    await _thread_run(indexing, {"embedder": {"documents": _haystack_docs(corpus)}})
    embedder = PredictiveQueryEmbedder(document_store=store)
    _with_test_predictor(embedder, encoder)
    reference = await prime_search(corpus, encoder, convs)
    dense = QdrantEmbeddingRetriever(document_store=store, top_k=K)
    hybrid = QdrantHybridRetriever(document_store=store, top_k=K)
    try:
        for conv, ref in zip(convs, reference, strict=True):
            vector = (await asyncio.to_thread(embedder.run, conv.query, conv.context))["embedding"]
            assert_same_hits(_pairs(dense.run(query_embedding=vector)["documents"]), ref)
            fused = hybrid.run(query_embedding=vector, query_sparse_embedding=_sparse(conv.query))["documents"]
            sparse_ids = {d.id for d in QdrantSparseEmbeddingRetriever(document_store=store, top_k=K).run(
                query_sparse_embedding=_sparse(conv.query))["documents"]}
            # a fusion of our dense hits and the sparse ones, with some of ours
            assert {d.id for d in fused} <= set(ref.doc_ids) | sparse_ids
            assert {d.id for d in fused} & set(ref.doc_ids)
    finally:
        embedder.close()


def test_serialisation_round_trip_and_prepare(encoder: HFTextEncoder) -> None:
    store = _store("hay_dict")
    for cls in (PredictiveQueryEmbedder, PrimeRetriever):
        component = cls(document_store=store, checkpoint="ckpt", links="links.json", backend="onnx")
        again = cls.from_dict(component.to_dict())
        assert again.to_dict() == component.to_dict() and again.options == component.options
    pipeline = Pipeline()
    pipeline.add_component("retriever", PrimeRetriever(document_store=store))
    loaded = Pipeline.loads(pipeline.dumps(), allowed_modules=["prime_retriever.integrations.haystack"])
    assert loaded.to_dict() == pipeline.to_dict()
    retriever = PrimeRetriever(document_store=store)
    with pytest.raises(PredictorError):
        retriever.run(context=["user: hi"])  # a PREPARE needs a session id


def test_example_runs() -> None:
    assert_example_runs("haystack_example.py", HAYSTACK_TELEMETRY_ENABLED="False")
