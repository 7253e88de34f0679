"""LangChain over ``langchain_qdrant.QdrantVectorStore`` (``pip install 'prime-retriever[langchain]'``).

* :class:`PrimeLangChainRetriever`: ``PredictiveRetriever.search`` as a LangChain ``BaseRetriever``
  (``invoke`` and ``ainvoke``), over the vector store's collection, predicting from the chat history
  (``chat_history=...``) or from turns the caller sets; each document's metadata carries its
  ``prime_source``, ``prime_confidence`` and ``prime_score``;
* :class:`PrimeEmbeddings`: the retriever's encoder as LangChain ``Embeddings``, for the vector store
  itself. LangChain embeds ``page_content`` alone, so a page that should embed as prime indexes a
  titled document holds ``"title: text"`` (:func:`page_content`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.documents import Document as LangChainDocument
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from langchain_qdrant import QdrantVectorStore
from pydantic import ConfigDict, Field
from qdrant_client import models

from prime_retriever import Document, HFTextEncoder, PredictiveRetriever, PredictorError, SearchResult, TextEncoder
from prime_retriever.integrations.conversation import context_turns
from prime_retriever.integrations.foreign_retriever import PredictorOptions, open_foreign_retriever
from prime_retriever.integrations.foreign_store import ForeignQdrantStore
from prime_retriever.integrations.payload_schema import langchain_schema
from prime_retriever.integrations.retriever_thread import RetrieverThread

__all__ = ["PrimeEmbeddings", "PrimeLangChainRetriever", "foreign_store", "page_content"]

#: LangChain message types as the predictor's turn roles.
_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}


class PrimeEmbeddings(Embeddings):
    """A prime :class:`~prime_retriever.TextEncoder` (default: the bundled MiniLM) as LangChain embeddings."""

    def __init__(self, encoder: TextEncoder | None = None) -> None:
        self.encoder = encoder if encoder is not None else HFTextEncoder()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        rows = self.encoder.encode(list(texts), batch_size=64, show_progress=False)
        return [[float(x) for x in row] for row in rows]

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        return (await self.aembed_documents([text]))[0]


def page_content(document: Document) -> str:
    """The page a LangChain document needs to embed as ``PredictiveRetriever.index`` encodes ``document``."""
    return document.encoding_text


def foreign_store(vector_store: QdrantVectorStore, title_key: str = "title") -> ForeignQdrantStore:
    """A read-only prime store over ``vector_store``'s collection (through its client)."""
    schema = langchain_schema(vector_store.vector_name, vector_store.content_payload_key,
                              vector_store.metadata_payload_key, title_key)
    return ForeignQdrantStore(vector_store.client, vector_store.collection_name, schema)


class PrimeLangChainRetriever(BaseRetriever):
    """``PredictiveRetriever.search`` over a LangChain Qdrant collection, from the chat history.

    Build it with :meth:`from_vector_store`. ``content_key``/``metadata_key`` are the vector store's
    payload keys (for rebuilding documents from hits).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    thread: RetrieverThread
    k: int = 4
    filter: models.Filter | None = None
    session_id: str | None = None
    chat_history: BaseChatMessageHistory | None = None
    context: list[str] = Field(default_factory=list)
    content_key: str = "page_content"
    metadata_key: str = "metadata"

    @classmethod
    def from_vector_store(
        cls, vector_store: QdrantVectorStore, options: PredictorOptions | None = None, *,
        encoder: TextEncoder | None = None, title_key: str = "title", **fields: Any,
    ) -> PrimeLangChainRetriever:
        store = foreign_store(vector_store, title_key)
        thread = RetrieverThread(lambda: open_foreign_retriever(store, options, encoder=encoder))
        return cls(thread=thread, content_key=vector_store.content_payload_key,
                   metadata_key=vector_store.metadata_payload_key, **fields)

    def history(self) -> list[str]:
        """The conversation so far: the chat history's messages as ``"role: text"``, else ``context``."""
        if self.chat_history is None:
            return list(self.context)
        turns = []
        for m in self.chat_history.messages:
            text = m.content if isinstance(m.content, str) else m.text
            if text.strip():
                turns.append(f"{_ROLES.get(m.type, m.type)}: {text}")
        return turns

    def _search(self, query: str) -> Any:
        turns = context_turns(self.history(), query)

        def run(rt: PredictiveRetriever) -> Any:
            return rt.search(turns, query, k=self.k, filter=self.filter, session_id=self.session_id)

        return run

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[LangChainDocument]:
        return self._documents(self.thread.call(self._search(query)))

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[LangChainDocument]:
        return self._documents(await self.thread.acall(self._search(query)))

    def _documents(self, result: SearchResult) -> list[LangChainDocument]:
        out: list[LangChainDocument] = []
        for hit in result:
            meta = dict(hit.payload.get(self.metadata_key) or {})
            meta.update(prime_source=hit.source, prime_confidence=result.confidence, prime_score=hit.score)
            out.append(LangChainDocument(id=hit.doc_id, page_content=str(hit.payload.get(self.content_key, "")),
                                         metadata=meta))
        return out

    def prepare_soon(self, session_id: str | None = None, turns: Sequence[str] | None = None) -> Any:
        """PREPARE from the conversation so far (call it when a turn ends); returns a Future at once."""
        sid = session_id or self.session_id
        history = list(turns) if turns is not None else self.history()
        if sid is None or not history:
            raise PredictorError("a PREPARE needs a session_id and a non-empty conversation")
        return self.thread.schedule(lambda rt: rt.prepare(sid, history, filter=self.filter))

    def close(self) -> None:
        self.thread.close()
