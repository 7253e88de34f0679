"""LangChain: a collection built by ``langchain_qdrant.QdrantVectorStore``'s own ingestion, searched through
our retriever, gives exactly ``PredictiveRetriever.search`` over prime's own store of the same corpus."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.chat_history import InMemoryChatMessageHistory
from langchain_core.documents import Document as LangChainDocument
from langchain_qdrant import QdrantVectorStore
from qdrant_client import QdrantClient, models
from qdrant_client.models import Distance, VectorParams

from integration_tests.conftest import assert_example_runs
from prime_retriever import Document, HFTextEncoder, PredictiveRetriever, PredictorError
from prime_retriever.integrations.foreign_retriever import open_foreign_retriever
from prime_retriever.integrations.foreign_store import ForeignCollectionError
from prime_retriever.integrations.langchain import PrimeEmbeddings, PrimeLangChainRetriever, foreign_store, page_content
from prime_retriever.integrations.retriever_thread import RetrieverThread
from prime_retriever.stores.base import point_id
from tests.prime_retriever.integrations.fixtures import Conversation, K, assert_same_hits, linked_backend, prime_search

pytestmark = pytest.mark.slow


def _lc_docs(corpus: list[Document]) -> list[LangChainDocument]:
    return [LangChainDocument(page_content=page_content(d), metadata={"title": d.title, "prime_id": d.id})
            for d in corpus]


def _retriever(vs: QdrantVectorStore, encoder: HFTextEncoder, **fields: object) -> PrimeLangChainRetriever:
    store = foreign_store(vs)
    backend = linked_backend()
    thread = RetrieverThread(lambda: open_foreign_retriever(store, encoder=encoder, backend=backend))
    return PrimeLangChainRetriever(thread=thread, k=K, **fields)


def _pairs(docs: list[LangChainDocument]) -> list[tuple[str, float]]:
    return [(str(d.metadata["prime_id"]), float(d.metadata["prime_score"])) for d in docs]


async def test_sync_and_async_equal_prime_search(corpus: list[Document], convs: list[Conversation],
                                                 encoder: HFTextEncoder) -> None:
    docs = _lc_docs(corpus)
    sync_vs = QdrantVectorStore.from_documents(docs, PrimeEmbeddings(encoder), location=":memory:",
                                               collection_name="lc_sync", ids=[point_id(d.id) for d in corpus])
    client = QdrantClient(location=":memory:")
    client.create_collection("lc_async", vectors_config=VectorParams(size=384, distance=Distance.COSINE))
    async_vs = QdrantVectorStore(client, "lc_async", PrimeEmbeddings(encoder))
    await async_vs.aadd_documents(docs, ids=[point_id(d.id) for d in corpus])
    reference = await prime_search(corpus, encoder, convs)
    history = InMemoryChatMessageHistory()
    sync_r = _retriever(sync_vs, encoder, chat_history=history)
    async_r = _retriever(async_vs, encoder)
    try:
        for conv, ref in zip(convs, reference, strict=True):
            history.clear()
            history.add_user_message(conv.context[0].removeprefix("user: "))
            history.add_ai_message(conv.context[1].removeprefix("assistant: "))
            assert sync_r.history() == conv.context
            hits = await _invoke(sync_r, conv.query)
            assert_same_hits(_pairs(hits), ref)
            assert {d.metadata["prime_source"] for d in hits} == {"predicted"}
            assert hits[0].page_content == f"{ref[0].title}: {ref[0].text}"
            async_r.context = conv.context
            assert_same_hits(_pairs(await async_r.ainvoke(conv.query)), ref)
    finally:
        sync_r.close()
        async_r.close()


async def _invoke(r: PrimeLangChainRetriever, query: str) -> list[LangChainDocument]:
    return await asyncio.to_thread(r.invoke, query)


async def test_filter_and_prepare(corpus: list[Document], convs: list[Conversation], encoder: HFTextEncoder) -> None:
    vs = QdrantVectorStore.from_documents(_lc_docs(corpus), PrimeEmbeddings(encoder), location=":memory:",
                                          collection_name="lc_filter", ids=[point_id(d.id) for d in corpus])
    titles = [corpus[i].title for i in range(0, 40, 2)]
    ours = models.Filter(must=[models.FieldCondition(key="metadata.title", match=models.MatchAny(any=titles))])
    theirs = models.Filter(must=[models.FieldCondition(key="title", match=models.MatchAny(any=titles))])
    reference = await prime_search(corpus, encoder, convs, filter=theirs)
    r = _retriever(vs, encoder, filter=ours, session_id="s1")
    try:
        for conv, ref in zip(convs, reference, strict=True):
            r.context = conv.context
            hits = await r.ainvoke(conv.query)
            assert {d.metadata["title"] for d in hits} <= set(titles)
            assert_same_hits(_pairs(hits), ref)
        prepared = r.prepare_soon(turns=convs[0].context).result(timeout=120)
        assert prepared.source == "predicted" and r.thread.call(_has_session)
    finally:
        r.close()


async def _has_session(rt: PredictiveRetriever) -> bool:
    return "s1" in rt.cache


async def test_foreign_collection_errors(encoder: HFTextEncoder) -> None:
    vs = QdrantVectorStore.from_texts(["untitled one", "untitled two"], PrimeEmbeddings(encoder),
                                      location=":memory:", collection_name="lc_bare")
    store = foreign_store(vs)
    with pytest.raises(ForeignCollectionError, match="title"):  # link expansion needs titles
        await open_foreign_retriever(store, encoder=encoder, backend=linked_backend())
    rt = await open_foreign_retriever(store, encoder=encoder)  # a predictor without link expansion serves it
    with pytest.raises(ForeignCollectionError, match="read-only"):
        await store.upsert(["x"], [[1.0] * 384], [{}])
    assert len(await rt.search(["user: hi"], "untitled", k=2)) == 2
    await rt.close()
    assert vs.client.count("lc_bare").count == 2  # nothing was written
    with pytest.raises(PredictorError):
        _retriever(vs, encoder).prepare_soon()


def test_example_runs() -> None:
    assert_example_runs("langchain_example.py")
