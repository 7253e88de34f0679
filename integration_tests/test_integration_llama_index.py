"""LlamaIndex: a collection built by LlamaIndex's own ingestion, searched through our components,
gives exactly ``PredictiveRetriever.search`` over prime's own store of the same corpus."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from llama_index.core import StorageContext, VectorStoreIndex
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.chat_engine import CondensePlusContextChatEngine
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.llms import MockLLM
from llama_index.core.memory import ChatMemoryBuffer
from llama_index.core.retrievers import VectorIndexRetriever
from llama_index.core.schema import MetadataMode, NodeWithScore
from llama_index.core.vector_stores import MetadataFilter, MetadataFilters
from llama_index.vector_stores.qdrant import QdrantVectorStore
from qdrant_client import AsyncQdrantClient, QdrantClient, models

from integration_tests.conftest import assert_example_runs
from prime_retriever import Document, HFTextEncoder, PredictiveRetriever, PredictorError
from prime_retriever.integrations.foreign_retriever import open_foreign_retriever
from prime_retriever.integrations.llama_index import (
    PredictiveEmbeddingRetriever,
    PrimeEmbedding,
    PrimeLlamaRetriever,
    foreign_store,
    text_node,
)
from prime_retriever.integrations.retriever_thread import RetrieverThread
from tests.prime_retriever.integrations.fixtures import Conversation, K, assert_same_hits, linked_backend, prime_search

pytestmark = pytest.mark.slow


def _ids(nodes: list[NodeWithScore]) -> list[tuple[str, float]]:
    return [(str(n.node.metadata["prime_id"]), float(n.score or 0.0)) for n in nodes]


def _thread(vs: QdrantVectorStore, encoder: HFTextEncoder, *, use_async: bool = False) -> RetrieverThread:
    store = foreign_store(vs, use_async=use_async)
    backend = linked_backend()
    return RetrieverThread(lambda: open_foreign_retriever(store, encoder=encoder, backend=backend))


@pytest.fixture(scope="module")
def sync_index(corpus: list[Document], encoder: HFTextEncoder) -> Iterator[tuple[VectorStoreIndex, QdrantVectorStore]]:
    vs = QdrantVectorStore("llama_docs", client=QdrantClient(location=":memory:"))
    nodes = [text_node(d) for d in corpus]
    index = VectorStoreIndex(nodes, storage_context=StorageContext.from_defaults(vector_store=vs),
                             embed_model=PrimeEmbedding(encoder))
    yield index, vs


def test_text_node_embeds_as_prime_indexes(corpus: list[Document]) -> None:
    for d in corpus[:5]:
        assert text_node(d).get_content(MetadataMode.EMBED) == d.encoding_text
    assert text_node(Document(id="x", text="plain")).get_content(MetadataMode.EMBED) == "plain"


async def test_sync_paths_equal_prime_search(sync_index: tuple[VectorStoreIndex, QdrantVectorStore],
                                             corpus: list[Document], convs: list[Conversation],
                                             encoder: HFTextEncoder) -> None:
    index, vs = sync_index
    reference = await prime_search(corpus, encoder, convs)
    full = PrimeLlamaRetriever(_thread(vs, encoder), k=K)
    embed = PredictiveEmbeddingRetriever(VectorIndexRetriever(index, similarity_top_k=K), _thread(vs, encoder))
    try:
        for conv, ref in zip(convs, reference, strict=True):
            full.set_context(conv.context)
            embed.set_context(conv.context)
            hits = await _in_thread(full.retrieve, conv.query)
            assert_same_hits(_ids(hits), ref)
            assert {n.node.metadata["prime_source"] for n in hits} == {"predicted"}
            assert all(n.node.metadata["prime_confidence"] == ref.confidence for n in hits)
            assert_same_hits(_ids(await _in_thread(embed.retrieve, conv.query)), ref)
    finally:
        full.close()
        embed.close()


async def _in_thread(fn: object, *args: object) -> list[NodeWithScore]:
    out: list[NodeWithScore] = await asyncio.to_thread(fn, *args)  # type: ignore[arg-type]
    return out


async def test_async_paths_equal_prime_search(corpus: list[Document], convs: list[Conversation],
                                              encoder: HFTextEncoder) -> None:
    # async ingestion into a store with only an async client (local mode keeps each client's data apart)
    vs = QdrantVectorStore("llama_async", aclient=AsyncQdrantClient(location=":memory:"))
    await IngestionPipeline(transformations=[PrimeEmbedding(encoder)], vector_store=vs).arun(
        nodes=[text_node(d) for d in corpus])
    index = VectorStoreIndex.from_vector_store(vs, embed_model=PrimeEmbedding(encoder))
    reference = await prime_search(corpus, encoder, convs)
    full = PrimeLlamaRetriever(_thread(vs, encoder, use_async=True), k=K)
    embed = PredictiveEmbeddingRetriever(VectorIndexRetriever(index, similarity_top_k=K),
                                         _thread(vs, encoder, use_async=True))
    try:
        for conv, ref in zip(convs, reference, strict=True):
            full.set_context(conv.context)
            embed.set_context(conv.context)
            assert_same_hits(_ids(await full.aretrieve(conv.query)), ref)
            assert_same_hits(_ids(await embed.aretrieve(conv.query)), ref)
    finally:
        full.close()
        embed.close()


async def test_stock_metadata_filters_keep_working(sync_index: tuple[VectorStoreIndex, QdrantVectorStore],
                                                   corpus: list[Document], convs: list[Conversation],
                                                   encoder: HFTextEncoder) -> None:
    index, vs = sync_index
    title = corpus[3].title
    flt = MetadataFilters(filters=[MetadataFilter(key="title", value=title)])
    qflt = models.Filter(must=[models.FieldCondition(key="title", match=models.MatchValue(value=title))])
    reference = await prime_search(corpus, encoder, convs[:2], filter=qflt)
    embed = PredictiveEmbeddingRetriever(VectorIndexRetriever(index, similarity_top_k=K, filters=flt),
                                         _thread(vs, encoder), filter=qflt)
    try:
        for conv, ref in zip(convs[:2], reference, strict=True):
            embed.set_context(conv.context)
            hits = await _in_thread(embed.retrieve, conv.query)
            assert [n.node.metadata["title"] for n in hits] == [title]
            assert_same_hits(_ids(hits), ref)
    finally:
        embed.close()


@pytest.fixture
def with_memory(sync_index: tuple[VectorStoreIndex, QdrantVectorStore],
                encoder: HFTextEncoder) -> Iterator[tuple[PrimeLlamaRetriever, ChatMemoryBuffer]]:
    """Our retriever over the synced index, reading its conversation from a chat memory (session "s1")."""
    _, vs = sync_index
    memory = ChatMemoryBuffer.from_defaults()
    retriever = PrimeLlamaRetriever(_thread(vs, encoder), k=K, memory=memory, session_id="s1")
    yield retriever, memory
    retriever.close()


def test_memory_turns_and_prepare(with_memory: tuple[PrimeLlamaRetriever, ChatMemoryBuffer],
                                  convs: list[Conversation]) -> None:
    full, memory = with_memory
    with pytest.raises(PredictorError):
        full.prepare_soon()  # nothing said yet
    memory.put(ChatMessage(role=MessageRole.USER, content=convs[0].context[0].removeprefix("user: ")))
    memory.put(ChatMessage(role=MessageRole.ASSISTANT, content="What would you like to know?"))
    assert full.history() == convs[0].context
    prepared = full.prepare_soon().result(timeout=120)
    assert prepared.source == "predicted"
    assert full.thread.call(_has_session)
    assert len(full.retrieve(convs[0].query)) == K


def test_a_chat_engine_prepares_between_turns(with_memory: tuple[PrimeLlamaRetriever, ChatMemoryBuffer],
                                              convs: list[Conversation]) -> None:
    retriever, memory = with_memory
    engine = CondensePlusContextChatEngine.from_defaults(retriever=retriever, llm=MockLLM(max_tokens=8), memory=memory)
    first = engine.chat(convs[0].context[0].removeprefix("user: "))
    assert {n.node.metadata["prime_source"] for n in first.source_nodes} == {"predicted"}
    # the turn has ended: warm the cache from the conversation so far, before the next message
    assert len(retriever.history()) == 2
    assert retriever.prepare_soon().result(timeout=120).source == "predicted"
    assert retriever.thread.call(_has_session)
    assert len(engine.chat(convs[0].query).source_nodes) == K


async def _has_session(rt: PredictiveRetriever) -> bool:
    return "s1" in rt.cache


def test_example_runs() -> None:
    assert_example_runs("llama_index_example.py")
