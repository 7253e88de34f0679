"""Haystack components over a stock ``QdrantDocumentStore`` (``pip install 'prime-retriever[haystack]'``).

* :class:`PredictiveQueryEmbedder`: (query, context turns) -> ``{"embedding": list[float]}``, the
  vector ``PredictiveRetriever.search`` would send; wire it into a stock ``QdrantEmbeddingRetriever``
  (or the dense input of ``QdrantHybridRetriever``) in place of a text embedder;
* :class:`PrimeRetriever`: ``PredictiveRetriever.search`` itself (the PREPARE cache included):
  ``{"documents": [...]}`` with ``prime_source`` and ``prime_confidence`` in each document's meta; a
  run without a query but with a ``session_id`` is a PREPARE (it warms the cache and returns at once);
* :class:`PrimeDocumentEmbedder`: embeds documents with the retriever's encoder as prime indexes them
  (``"title: text"`` with ``meta_fields_to_embed=["title"]``).

Every component has ``run`` and ``run_async`` and serialises with ``to_dict``/``from_dict`` (the
document store by its own ``to_dict``, the predictor by :class:`PredictorOptions`'s plain values).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Callable
from typing import Any

from haystack import Document, component, default_from_dict, default_to_dict
from haystack_integrations.document_stores.qdrant import QdrantDocumentStore
from haystack_integrations.document_stores.qdrant.converters import convert_id
from haystack_integrations.document_stores.qdrant.filters import convert_filters_to_qdrant
from qdrant_client import AsyncQdrantClient, QdrantClient, models

from prime_retriever import HFTextEncoder, PredictiveRetriever, PredictorError, SearchResult, StoreError, TextEncoder
from prime_retriever.backends.inference import PredictorBackend
from prime_retriever.integrations.conversation import context_turns
from prime_retriever.integrations.foreign_retriever import PredictorOptions, open_foreign_retriever
from prime_retriever.integrations.foreign_store import ForeignQdrantStore
from prime_retriever.integrations.payload_schema import haystack_schema
from prime_retriever.integrations.retriever_thread import RetrieverThread

__all__ = ["PredictiveQueryEmbedder", "PrimeDocumentEmbedder", "PrimeRetriever", "foreign_store"]

SOURCE_KEY, CONFIDENCE_KEY = "prime_source", "prime_confidence"


def foreign_store(document_store: QdrantDocumentStore, client: QdrantClient | AsyncQdrantClient,
                  title_key: str = "title") -> ForeignQdrantStore:
    """A read-only prime store over ``document_store``'s collection through ``client``."""
    schema = haystack_schema(convert_id, use_sparse_embeddings=document_store.use_sparse_embeddings,
                             title_key=title_key)
    return ForeignQdrantStore(client, document_store.index, schema)


def _sync_client(ds: QdrantDocumentStore) -> QdrantClient:
    # the store's own client: in local mode it is the only handle on the data it wrote
    ds._initialize_client()
    if ds._client is None:
        raise StoreError(f"QdrantDocumentStore({ds.index!r}) has no client")
    return ds._client


async def _async_client(ds: QdrantDocumentStore) -> AsyncQdrantClient:
    await ds._initialize_async_client()
    if ds._async_client is None:
        raise StoreError(f"QdrantDocumentStore({ds.index!r}) has no async client")
    return ds._async_client


class _PredictiveComponent:
    """What both predictive components share: the store, the predictor options, one retriever per path.

    The sync path searches through the document store's sync client and the async path through its
    async one: in Qdrant local mode each holds its own data (what ``run`` and ``run_async`` wrote).
    """

    def _setup(self, document_store: QdrantDocumentStore, checkpoint: str | None, links: str | None,
               encoder: str | None, backend: str, title_key: str) -> None:
        self.document_store = document_store
        self.options = PredictorOptions(checkpoint=checkpoint, links=links, encoder=encoder, backend=backend)
        self.title_key = title_key
        self._encoder: TextEncoder | None = None
        self._backend: PredictorBackend | None = None
        self._threads: dict[bool, RetrieverThread] = {}

    def _opener(self, use_async: bool) -> Callable[[], Awaitable[PredictiveRetriever]]:
        async def open_it() -> PredictiveRetriever:
            ds = self.document_store
            client = await _async_client(ds) if use_async else _sync_client(ds)
            return await open_foreign_retriever(foreign_store(ds, client, self.title_key), self.options,
                                                encoder=self._encoder, backend=self._backend)
        return open_it

    def thread(self, use_async: bool) -> RetrieverThread:
        """The retriever thread of the sync (``False``) or async (``True``) path, opened at first use."""
        if use_async not in self._threads:
            self._threads[use_async] = RetrieverThread(self._opener(use_async))
        return self._threads[use_async]

    def use_encoder(self, encoder: TextEncoder) -> None:
        """Share an encoder already loaded (else each path loads ``options.encoder``); before the first run."""
        self._encoder = encoder

    def use_backend(self, backend: PredictorBackend) -> None:
        """Serve a predictor already loaded instead of ``options.checkpoint`` (not serialised); before the first run."""
        self._backend = backend

    def close(self) -> None:
        for t in self._threads.values():
            t.close()
        self._threads.clear()

    def _params(self) -> dict[str, Any]:
        return {"document_store": self.document_store.to_dict(), "checkpoint": self.options.checkpoint,
                "links": self.options.links, "encoder": self.options.encoder, "backend": self.options.backend,
                "title_key": self.title_key}


def _from_dict(cls: type[Any], data: dict[str, Any]) -> Any:
    params = data["init_parameters"]
    params["document_store"] = QdrantDocumentStore.from_dict(params["document_store"])
    return default_from_dict(cls, data)


def _qdrant_filter(filters: dict[str, Any] | models.Filter | None) -> models.Filter | None:
    if filters is None or isinstance(filters, models.Filter):
        return filters
    return convert_filters_to_qdrant(filters)


@component
class PredictiveQueryEmbedder(_PredictiveComponent):
    """(query, context turns) -> the predicted query embedding, for a stock Qdrant retriever.

    Args:
        document_store: the store the retriever searches (link expansion reads it; nothing is written).
        checkpoint, links, encoder, backend: see :class:`PredictorOptions`.
        title_key: the ``meta`` key holding a document's title (for link expansion).
    """

    def __init__(self, document_store: QdrantDocumentStore, checkpoint: str | None = None, links: str | None = None,
                 encoder: str | None = None, backend: str = "eager", title_key: str = "title") -> None:
        self._setup(document_store, checkpoint, links, encoder, backend, title_key)

    @component.output_types(embedding=list[float])
    def run(self, query: str, context: list[str] | None = None,
            filters: dict[str, Any] | None = None) -> dict[str, list[float]]:
        """``context``: the conversation so far (``"role: text"``, oldest first); ``filters``: Haystack filters
        that restrict the documents link expansion may show the predictor (pass the retriever's own)."""
        turns, flt = context_turns(context or [], query), _qdrant_filter(filters)
        vector = self.thread(False).call(lambda rt: rt.predict_vector(turns, query, filter=flt))
        return {"embedding": [float(x) for x in vector]}

    @component.output_types(embedding=list[float])
    async def run_async(self, query: str, context: list[str] | None = None,
                        filters: dict[str, Any] | None = None) -> dict[str, list[float]]:
        turns, flt = context_turns(context or [], query), _qdrant_filter(filters)
        vector = await self.thread(True).acall(lambda rt: rt.predict_vector(turns, query, filter=flt))
        return {"embedding": [float(x) for x in vector]}

    def to_dict(self) -> dict[str, Any]:
        return default_to_dict(self, **self._params())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PredictiveQueryEmbedder:
        out: PredictiveQueryEmbedder = _from_dict(cls, data)
        return out


@component
class PrimeRetriever(_PredictiveComponent):
    """``PredictiveRetriever.search`` over a ``QdrantDocumentStore``: documents with their hit source and confidence.

    A run with ``session_id`` and no ``query`` is a PREPARE from ``context``: it is scheduled, returns
    ``{"documents": []}`` at once, and a later search of that session may be served from the cache.
    """

    def __init__(self, document_store: QdrantDocumentStore, checkpoint: str | None = None, links: str | None = None,
                 encoder: str | None = None, backend: str = "eager", title_key: str = "title",
                 top_k: int = 10) -> None:
        self._setup(document_store, checkpoint, links, encoder, backend, title_key)
        self.top_k = top_k

    def _call(self, query: str | None, context: list[str] | None, filters: dict[str, Any] | None,
              top_k: int | None, session_id: str | None) -> Callable[[PredictiveRetriever], Awaitable[SearchResult]]:
        flt, k = _qdrant_filter(filters), top_k or self.top_k
        if query is None:
            if session_id is None or not context:
                raise PredictorError("a run without a query is a PREPARE: it needs a session_id and the context")
            turns = list(context)
            return lambda rt: rt.prepare(session_id, turns, k=k, filter=flt)
        turns = context_turns(context or [], query)
        return lambda rt: rt.search(turns, query, k=k, filter=flt, session_id=session_id)

    @component.output_types(documents=list[Document])
    def run(self, query: str | None = None, context: list[str] | None = None, filters: dict[str, Any] | None = None,
            top_k: int | None = None, session_id: str | None = None) -> dict[str, list[Document]]:
        call = self._call(query, context, filters, top_k, session_id)
        if query is None:
            self.thread(False).schedule(call)
            return {"documents": []}
        return {"documents": _documents(self.thread(False).call(call))}

    @component.output_types(documents=list[Document])
    async def run_async(self, query: str | None = None, context: list[str] | None = None,
                        filters: dict[str, Any] | None = None, top_k: int | None = None,
                        session_id: str | None = None) -> dict[str, list[Document]]:
        call = self._call(query, context, filters, top_k, session_id)
        if query is None:
            self.thread(True).schedule(call)
            return {"documents": []}
        return {"documents": _documents(await self.thread(True).acall(call))}

    def prepare_soon(self, session_id: str, context: list[str], filters: dict[str, Any] | None = None, *,
                     use_async: bool = False) -> concurrent.futures.Future[SearchResult]:
        """PREPARE as a plain callback (e.g. after the generator's reply); returns a Future at once.

        ``use_async``: warm the path ``run_async`` searches (in local mode it holds its own data).
        """
        return self.thread(use_async).schedule(self._call(None, context, filters, None, session_id))

    def to_dict(self) -> dict[str, Any]:
        return default_to_dict(self, **self._params(), top_k=self.top_k)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrimeRetriever:
        out: PrimeRetriever = _from_dict(cls, data)
        return out


def _documents(result: SearchResult) -> list[Document]:
    out: list[Document] = []
    for hit in result:
        doc = Document.from_dict({**hit.payload, "score": hit.score})
        doc.meta[SOURCE_KEY] = hit.source
        doc.meta[CONFIDENCE_KEY] = result.confidence
        out.append(doc)
    return out


@component
class PrimeDocumentEmbedder:
    """Embed documents with a prime encoder: ``separator.join([*meta values, content])``, as prime indexes.

    With the defaults (``meta_fields_to_embed=["title"]``, ``embedding_separator=": "``) a document with
    a title embeds as ``"title: text"``, exactly as ``PredictiveRetriever.index`` encodes it.
    """

    def __init__(self, encoder: str | None = None, meta_fields_to_embed: list[str] | None = None,
                 embedding_separator: str = ": ", batch_size: int = 64) -> None:
        self.encoder = encoder
        self.meta_fields_to_embed = ["title"] if meta_fields_to_embed is None else list(meta_fields_to_embed)
        self.embedding_separator = embedding_separator
        self.batch_size = batch_size
        self._encoder: TextEncoder | None = None

    def warm_up(self) -> None:
        if self._encoder is None:
            self._encoder = HFTextEncoder(self.encoder)

    def use_encoder(self, encoder: TextEncoder) -> None:
        """Share an encoder already loaded instead of loading ``encoder``."""
        self._encoder = encoder

    def _text(self, doc: Document) -> str:
        meta = [str(doc.meta[k]) for k in self.meta_fields_to_embed if doc.meta.get(k)]
        return self.embedding_separator.join([*meta, doc.content or ""])

    @component.output_types(documents=list[Document])
    def run(self, documents: list[Document]) -> dict[str, list[Document]]:
        self.warm_up()
        assert self._encoder is not None
        vectors = self._encoder.encode([self._text(d) for d in documents], batch_size=self.batch_size,
                                       show_progress=False)
        out = [Document.from_dict({**d.to_dict(flatten=False), "embedding": [float(x) for x in v]})
               for d, v in zip(documents, vectors, strict=True)]
        return {"documents": out}

    @component.output_types(documents=list[Document])
    async def run_async(self, documents: list[Document]) -> dict[str, list[Document]]:
        return await asyncio.to_thread(self.run, documents)

    def to_dict(self) -> dict[str, Any]:
        return default_to_dict(self, encoder=self.encoder, meta_fields_to_embed=self.meta_fields_to_embed,
                               embedding_separator=self.embedding_separator, batch_size=self.batch_size)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrimeDocumentEmbedder:
        out: PrimeDocumentEmbedder = default_from_dict(cls, data)
        return out
