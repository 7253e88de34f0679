"""The LlamaIndex components on a tiny corpus (real llama-index-core, QdrantVectorStore, MiniLM)."""

from __future__ import annotations

import numpy as np
import pytest
from llama_index.core import StorageContext, VectorStoreIndex
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.memory import ChatMemoryBuffer
from llama_index.core.retrievers import VectorIndexRetriever
from llama_index.vector_stores.qdrant import QdrantVectorStore
from qdrant_client import AsyncQdrantClient, QdrantClient

from prime_retriever import PredictorError, TextEncoder
from prime_retriever.integrations.llama_index import (
    PredictiveEmbeddingRetriever,
    PrimeEmbedding,
    PrimeLlamaRetriever,
    foreign_store,
    text_node,
)
from tests.prime_retriever.integrations.fixtures import DICE_CONTEXT as CONTEXT
from tests.prime_retriever.integrations.fixtures import DICE_DOCS as DOCS


@pytest.fixture(scope="module")
def index(minilm: TextEncoder) -> tuple[VectorStoreIndex, QdrantVectorStore]:
    vs = QdrantVectorStore("li", client=QdrantClient(location=":memory:"))
    idx = VectorStoreIndex([text_node(d) for d in DOCS], embed_model=PrimeEmbedding(minilm),
                           storage_context=StorageContext.from_defaults(vector_store=vs))
    return idx, vs


async def test_embeddings_are_the_encoders(minilm: TextEncoder) -> None:
    emb = PrimeEmbedding(minilm)
    want = np.asarray(minilm.encode(["a", "b"], batch_size=2, show_progress=False))
    np.testing.assert_allclose(emb.get_text_embedding_batch(["a", "b"]), want, atol=1e-6)
    np.testing.assert_allclose(emb.get_query_embedding("a"), want[0], atol=1e-6)
    np.testing.assert_allclose(await emb.aget_query_embedding("b"), want[1], atol=1e-6)
    np.testing.assert_allclose(emb.get_text_embedding("b"), want[1], atol=1e-6)
    assert emb.model_name == minilm.name


def test_both_retrievers_agree_and_read_the_memory(index: tuple[VectorStoreIndex, QdrantVectorStore],
                                                   minilm: TextEncoder) -> None:
    idx, vs = index
    memory = ChatMemoryBuffer.from_defaults()
    memory.put(ChatMessage(role=MessageRole.USER, content="I played Demon Dice."))
    memory.put(ChatMessage(role=MessageRole.ASSISTANT, content=""))  # an empty message is no turn
    with pytest.warns(UserWarning, match="no checkpoint"):
        full = PrimeLlamaRetriever.from_vector_store(vs, encoder=minilm, memory=memory, k=3, session_id="s")
        embed = PredictiveEmbeddingRetriever.from_vector_store(VectorIndexRetriever(idx, similarity_top_k=3), vs,
                                                               encoder=minilm, memory=memory)
        try:
            assert full.history() == ["user: I played Demon Dice."]
            hits = full.retrieve("Who designed it?")
            assert [n.node.node_id for n in embed.retrieve("Who designed it?")] == [n.node.node_id for n in hits]
            assert hits[0].node.metadata["prime_source"] == "predicted" and "prime_confidence" in hits[0].node.metadata
            assert "prime_source" not in hits[0].node.get_content(metadata_mode="llm")  # type: ignore[arg-type]
            assert full.prepare_soon().result(timeout=60).source == "predicted"
        finally:
            full.close()
            embed.close()


async def test_async_and_prepare_errors(minilm: TextEncoder) -> None:
    vs = QdrantVectorStore("li_async", aclient=AsyncQdrantClient(location=":memory:"))
    await vs.async_add([text_node(d).model_copy(update={"embedding": v}) for d, v in zip(
        DOCS, PrimeEmbedding(minilm).get_text_embedding_batch([d.encoding_text for d in DOCS]), strict=True)])
    with pytest.warns(UserWarning, match="no checkpoint"):
        full = PrimeLlamaRetriever.from_vector_store(vs, use_async=True, encoder=minilm, context=CONTEXT, k=2)
        try:
            hits = await full.aretrieve("Who designed it?")
            assert len(hits) == 2 and hits[0].node.get_content().startswith(("Demon", "Lester", "Dragon"))
            with pytest.raises(PredictorError, match="session_id"):
                full.prepare_soon()
            full.set_context([])
            with pytest.raises(PredictorError, match="empty"):
                full.prepare_soon("s")
        finally:
            full.close()
    with pytest.raises(PredictorError, match="sync client"):
        foreign_store(vs)
