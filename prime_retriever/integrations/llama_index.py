"""LlamaIndex drop-ins over a stock ``QdrantVectorStore`` (``pip install 'prime-retriever[llama-index]'``).

Two ways in, both sync and async:

* :class:`PredictiveEmbeddingRetriever` (the cheapest): puts the predicted vector into
  ``QueryBundle.embedding`` and hands it to your stock ``VectorIndexRetriever``, so its metadata
  filters, and the query engine's node postprocessors and rerankers, work unchanged;
* :class:`PrimeLlamaRetriever`: ``PredictiveRetriever.search`` itself (PREPARE cache, the search-score
  confidence), returning ``NodeWithScore`` whose metadata carries ``prime_source`` and
  ``prime_confidence``.

Both take the conversation from the caller (:meth:`~_Conversational.set_context`) or from a chat
memory (``memory=ChatMemoryBuffer...``). :class:`PrimeEmbedding` embeds nodes and queries with the
retriever's encoder; :func:`text_node` builds a node that embeds as prime indexes (``"title: text"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.memory.types import BaseMemory
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from llama_index.core.vector_stores.utils import metadata_dict_to_node
from llama_index.vector_stores.qdrant import QdrantVectorStore
from pydantic import PrivateAttr
from qdrant_client import models

from prime_retriever import Document, HFTextEncoder, PredictiveRetriever, PredictorError, SearchResult, TextEncoder
from prime_retriever.integrations.conversation import context_turns
from prime_retriever.integrations.foreign_retriever import PredictorOptions, open_foreign_retriever
from prime_retriever.integrations.foreign_store import ForeignQdrantStore
from prime_retriever.integrations.payload_schema import llama_index_schema
from prime_retriever.integrations.retriever_thread import RetrieverThread
from prime_retriever.stores.base import point_id

__all__ = [
    "PredictiveEmbeddingRetriever",
    "PrimeEmbedding",
    "PrimeLlamaRetriever",
    "foreign_store",
    "text_node",
]

#: The metadata keys a hit gets (kept out of the LLM's and the embedder's view of the node).
SOURCE_KEY, CONFIDENCE_KEY = "prime_source", "prime_confidence"


class PrimeEmbedding(BaseEmbedding):
    """A LlamaIndex embed model on a prime :class:`~prime_retriever.TextEncoder` (default: the bundled MiniLM)."""

    _encoder: TextEncoder = PrivateAttr()

    def __init__(self, encoder: TextEncoder | None = None, **kwargs: Any) -> None:
        enc = encoder if encoder is not None else HFTextEncoder()
        super().__init__(model_name=enc.name, **kwargs)
        self._encoder = enc

    def _embed(self, texts: list[str]) -> list[Embedding]:
        return [[float(x) for x in row] for row in self._encoder.encode(texts, batch_size=64, show_progress=False)]

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._embed([query])[0]

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._embed([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._embed(texts)


def text_node(document: Document) -> TextNode:
    """A node that embeds exactly as ``PredictiveRetriever.index`` encodes ``document`` (``"title: text"``).

    Its id is prime's point id of the document (Qdrant needs a UUID); the document's own id is kept in
    the metadata under ``prime_id`` (not embedded).
    """
    if not document.title:
        return TextNode(id_=point_id(document.id), text=document.text, metadata={"prime_id": document.id},
                        excluded_embed_metadata_keys=["prime_id"])
    return TextNode(
        id_=point_id(document.id), text=document.text, metadata={"title": document.title, "prime_id": document.id},
        excluded_embed_metadata_keys=["prime_id"], metadata_template="{value}",
        text_template="{metadata_str}: {content}",
    )


def foreign_store(vector_store: QdrantVectorStore, *, use_async: bool = False, title_key: str = "title"
                  ) -> ForeignQdrantStore:
    """A read-only prime store over ``vector_store``'s collection (its sync client, or its async one)."""
    client = getattr(vector_store, "_aclient", None) if use_async else vector_store.client
    if client is None:
        raise PredictorError(f"the QdrantVectorStore has no {'async' if use_async else 'sync'} client")
    return ForeignQdrantStore(client, vector_store.collection_name,
                              llama_index_schema(vector_store.dense_vector_name, title_key))


class _Conversational:
    """The conversation a retrieval predicts from: a chat memory, or turns the caller set."""

    def _init_conversation(self, memory: BaseMemory | None, context: Sequence[str] | None) -> None:
        self._memory = memory
        self._turns = list(context) if context is not None else []

    def set_context(self, turns: Sequence[str]) -> None:
        """The conversation so far (``"role: text"`` strings, oldest first), used while no memory is given."""
        self._turns = list(turns)

    def history(self) -> list[str]:
        """The conversation so far as turns: the memory's messages, else the turns set."""
        if self._memory is not None:
            return [f"{m.role.value}: {m.content}" for m in self._memory.get_all() if (m.content or "").strip()]
        return list(self._turns)

    def context_for(self, query: str) -> list[str]:
        return context_turns(self.history(), query)


class PrimeLlamaRetriever(_Conversational, BaseRetriever):
    """``PredictiveRetriever.search`` as a LlamaIndex retriever (the PREPARE cache included).

    Build it with :meth:`from_vector_store`, or give a :class:`RetrieverThread` you opened.
    """

    def __init__(
        self,
        thread: RetrieverThread,
        *,
        k: int = 5,
        filter: models.Filter | None = None,
        session_id: str | None = None,
        memory: BaseMemory | None = None,
        context: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.thread, self.k, self.filter, self.session_id = thread, k, filter, session_id
        self._init_conversation(memory, context)

    @classmethod
    def from_vector_store(
        cls, vector_store: QdrantVectorStore, options: PredictorOptions | None = None, *,
        use_async: bool = False, encoder: TextEncoder | None = None, **kwargs: Any,
    ) -> PrimeLlamaRetriever:
        store = foreign_store(vector_store, use_async=use_async)
        return cls(RetrieverThread(lambda: open_foreign_retriever(store, options, encoder=encoder)), **kwargs)

    def _search(self, query: str) -> Any:
        ctx = self.context_for(query)

        def run(rt: PredictiveRetriever) -> Any:
            return rt.search(ctx, query, k=self.k, filter=self.filter, session_id=self.session_id)

        return run

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return _nodes(self.thread.call(self._search(query_bundle.query_str)))

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return _nodes(await self.thread.acall(self._search(query_bundle.query_str)))

    def prepare_soon(self, session_id: str | None = None) -> Any:
        """PREPARE now, from the conversation so far (call it when a turn ends); returns a Future at once."""
        sid = session_id or self.session_id
        if sid is None:
            raise PredictorError("prepare_soon needs a session_id (here or in the constructor)")
        turns = self.history()
        if not turns:
            raise PredictorError("nothing to prepare from: the conversation is empty")
        return self.thread.schedule(lambda rt: rt.prepare(sid, turns, filter=self.filter))

    def close(self) -> None:
        self.thread.close()


def _nodes(result: SearchResult) -> list[NodeWithScore]:
    out: list[NodeWithScore] = []
    for hit in result:
        node = metadata_dict_to_node(dict(hit.payload))
        node.id_ = hit.doc_id
        node.metadata[SOURCE_KEY] = hit.source
        node.metadata[CONFIDENCE_KEY] = result.confidence
        for keys in (node.excluded_embed_metadata_keys, node.excluded_llm_metadata_keys):
            keys.extend(k for k in (SOURCE_KEY, CONFIDENCE_KEY) if k not in keys)
        out.append(NodeWithScore(node=node, score=hit.score))
    return out


class PredictiveEmbeddingRetriever(_Conversational, BaseRetriever):
    """Fill ``QueryBundle.embedding`` with the predicted vector, then run your stock retriever.

    Args:
        retriever: a stock ``VectorIndexRetriever`` (its filters and ``similarity_top_k`` apply).
        thread: the :class:`RetrieverThread` predicting the vector (over the same collection, for
            link expansion).
        filter: a Qdrant filter for the link-expansion lookups (the stock retriever's
            ``MetadataFilters`` restrict its hits, not the documents the predictor is shown).
    """

    def __init__(
        self, retriever: BaseRetriever, thread: RetrieverThread, *, filter: models.Filter | None = None,
        memory: BaseMemory | None = None, context: Sequence[str] | None = None, **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.retriever, self.thread, self.filter = retriever, thread, filter
        self._init_conversation(memory, context)

    @classmethod
    def from_vector_store(
        cls, retriever: BaseRetriever, vector_store: QdrantVectorStore, options: PredictorOptions | None = None,
        *, use_async: bool = False, encoder: TextEncoder | None = None, **kwargs: Any,
    ) -> PredictiveEmbeddingRetriever:
        store = foreign_store(vector_store, use_async=use_async)
        return cls(retriever, RetrieverThread(lambda: open_foreign_retriever(store, options, encoder=encoder)),
                   **kwargs)

    def _bundle(self, query: QueryBundle, vector: Any) -> QueryBundle:
        return QueryBundle(query_str=query.query_str, embedding=[float(x) for x in vector],
                           image_path=query.image_path, custom_embedding_strs=query.custom_embedding_strs)

    def _predict(self, query: str) -> Any:
        ctx = self.context_for(query)
        return lambda rt: rt.predict_vector(ctx, query, filter=self.filter)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        vector = self.thread.call(self._predict(query_bundle.query_str))
        return self.retriever.retrieve(self._bundle(query_bundle, vector))

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        vector = await self.thread.acall(self._predict(query_bundle.query_str))
        return await self.retriever.aretrieve(self._bundle(query_bundle, vector))

    def close(self) -> None:
        self.thread.close()
