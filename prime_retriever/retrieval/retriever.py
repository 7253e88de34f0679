"""The predictive retriever: predict the ideal context's embedding, then search the store with it.

::

    async with PredictiveRetriever.from_config("ckpt/", store="edge:/data/index") as retriever:
        await retriever.warmup()
        await retriever.prepare("session-1", ["user: ...", "assistant: ..."])  # PREPARE state
        hits = await retriever.search(context, query, k=5, session_id="session-1")
        for hit in hits:
            print(hit.doc_id, hit.score, hit.source)  # "predicted" | "cache" | "fallback"

A search is validated before any I/O (:mod:`~prime_retriever.retrieval.requests`), waits a few
milliseconds for concurrent searches (:class:`~prime_retriever.retrieval.micro_batcher.MicroBatcher`),
and its micro-batch runs through the :class:`~prime_retriever.retrieval.pipeline.BatchPipeline`
(encode -> expand -> predict -> PREPARE cache -> search); each caller gets exactly its own hits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import time
import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt

from prime_retriever.backends.factory import make_backend
from prime_retriever.backends.inference import PredictorBackend
from prime_retriever.errors import PredictorError, RetrieverError
from prime_retriever.model.checkpoint import load_checkpoint
from prime_retriever.model.random_predictor import random_predictor
from prime_retriever.model.score_confidence import ScoreConfidence
from prime_retriever.retrieval.indexing import IndexReport, index_documents
from prime_retriever.retrieval.link_graph import LinkExpansion, LinkGraph
from prime_retriever.retrieval.micro_batcher import MicroBatcher
from prime_retriever.retrieval.pipeline import BatchPipeline, PipelineParts
from prime_retriever.retrieval.predictive_cache import PredictiveCache
from prime_retriever.retrieval.requests import ContextInput, Outcome, QueryInput, Request, RequestValidator
from prime_retriever.retrieval.rerank import Reranker
from prime_retriever.retrieval.results import SearchResult, hits_from
from prime_retriever.stores.base import ScoredDoc, VectorStore, is_valid_k
from prime_retriever.stores.open import open_store
from prime_retriever.stores.retry import RetryPolicy, call_store
from prime_retriever.text.bm25 import Bm25Encoder
from prime_retriever.text.corpus import read_corpus_jsonl
from prime_retriever.text.documents import Document
from prime_retriever.text.encoders import TextEncoder, check_encoder_dims
from prime_retriever.text.fast_encoder import load_encoder

__all__ = ["PredictiveRetriever"]

_log = logging.getLogger(__name__)


def _expansion_for(config: Any, links: str | os.PathLike[str] | LinkGraph | None) -> LinkExpansion | None:
    """The :class:`LinkExpansion` a predictor's config asks for, built on ``links``."""
    n = int(getattr(config, "link_candidates", 0) or 0)
    if n == 0:
        if links is not None:
            warnings.warn("links given, but the predictor was not trained with link expansion: ignored", stacklevel=3)
        return None
    if links is None:
        warnings.warn(
            f"the predictor was trained with link expansion (link_candidates={n}) but no link graph was given: "
            "it will see no linked documents", stacklevel=3,
        )
        return None
    return LinkExpansion.for_config(config, links if isinstance(links, LinkGraph) else LinkGraph.load(links))


class PredictiveRetriever:
    """Predict the embedding of the ideal context, then search a :class:`VectorStore` with it.

    Args:
        backend: any :class:`PredictorBackend` (eager torch, optimised torch, ONNX).
        encoder: the :class:`TextEncoder` that embeds contexts/queries and built the index
            (``encoder.dim`` must equal the backend's input and output dims).
        store: the :class:`VectorStore` holding the documents.
        max_batch_size: most searches sharing one predictor forward and one ``search_batch``.
        batch_wait_s: how long a search waits for company (a few ms).
        micro_batching: ``False`` runs each search alone (the baseline of the benchmark).
        cache: the PREPARE cache (default: 1024 sessions, 300 s TTL, cosine threshold 0.9).
        retry: bounds on store retries and per-call timeouts.
        prepare_k: how many hits :meth:`prepare` keeps (>= the k of later searches, so they can
            be served from the cache).
        text_cache_size: in-memory LRU of text embeddings (a PREPAREd context is not re-encoded
            by its search); 0 disables it.
        owns_store: close the store in :meth:`close`.
        expansion: a :class:`~prime_retriever.retrieval.link_graph.LinkExpansion` for a predictor trained with
            one (its config's ``link_candidates`` > 0): the linked documents join the context as its
            oldest turns, and the conversation keeps its most recent
            ``max_context_length - max_candidates`` turns.
        hybrid: hybrid search: the collection also holds BM25 vectors (:meth:`index` writes them),
            and a search with a query text sends that text's BM25 vector beside the predicted one,
            fused by RRF in the store (one request; see :mod:`~prime_retriever.retrieval.pipeline` for
            what changes: no PREPARE-cache answers, the head's confidence).
        score_confidence: the search-score calibration of :attr:`SearchResult.confidence`
            (:class:`~prime_retriever.model.score_confidence.ScoreConfidence`; :meth:`from_config` takes
            the checkpoint's); ``None`` reports the predictor's confidence head instead.
        reranker: an opt-in second stage (:class:`~prime_retriever.retrieval.rerank.Reranker`): a search with
            a query text fetches at least ``reranker.top_n`` hits and re-orders them with its cross-encoder
            (a forward per hit, on the worker thread); their scores become its logits. If it fails, the
            search serves the first stage's hits and logs a warning.
    """

    def __init__(
        self,
        backend: PredictorBackend,
        encoder: TextEncoder,
        store: VectorStore,
        *,
        max_batch_size: int = 32,
        batch_wait_s: float = 0.002,
        micro_batching: bool = True,
        cache: PredictiveCache | None = None,
        retry: RetryPolicy | None = None,
        prepare_k: int = 10,
        text_cache_size: int = 4096,
        owns_store: bool = True,
        expansion: LinkExpansion | None = None,
        score_confidence: ScoreConfidence | None = None,
        hybrid: bool = False,
        reranker: Reranker | None = None,
    ) -> None:
        check_encoder_dims(encoder, backend.input_dim, backend.output_dim)
        if prepare_k < 1:
            raise ValueError(f"prepare_k must be >= 1, got {prepare_k}")
        if text_cache_size < 0:
            raise ValueError(f"text_cache_size must be >= 0, got {text_cache_size}")
        self.backend = backend
        self.encoder = encoder
        self.store = store
        self.cache = cache if cache is not None else PredictiveCache()
        self.retry = retry if retry is not None else RetryPolicy()
        self.prepare_k = prepare_k
        self.owns_store = owns_store
        self.dim = encoder.dim
        self.max_context_length = backend.max_context_length
        self.expansion = expansion
        self.score_confidence = score_confidence
        self.bm25 = Bm25Encoder() if hybrid else None
        self.reranker = reranker
        if expansion is not None and expansion.max_candidates >= self.max_context_length:
            raise ValueError(
                f"expansion.max_candidates ({expansion.max_candidates}) must be below the predictor's "
                f"max_context_length ({self.max_context_length})"
            )
        # turns of the conversation itself that the predictor sees
        keep_turns = self.max_context_length - (expansion.max_candidates if expansion is not None else 0)
        self._validator = RequestValidator(self.dim, keep_turns)
        # one worker thread for the encoder and the predictor: the loop never runs torch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prime-retriever")
        parts = PipelineParts(backend, encoder, store, self.cache, self.retry, expansion, score_confidence,
                              text_cache_size, self.bm25)
        self._pipeline = BatchPipeline(parts, self._executor)
        self._batcher: MicroBatcher[Request, Outcome] = MicroBatcher(
            self._pipeline.process_batch, max_batch_size=max_batch_size, max_wait_s=batch_wait_s,
            enabled=micro_batching,
        )
        self._ready = False
        self._opening: asyncio.Future[None] | None = None  # the one ensure_collection every first caller awaits
        self._loop: asyncio.AbstractEventLoop | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._closed = False

    @property
    def fallbacks(self) -> int:
        """Searches served by the fallback path (monitoring)."""
        return self._pipeline.fallbacks

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_config(
        cls,
        checkpoint: str | os.PathLike[str] | None = None,
        *,
        store: str | VectorStore = ":memory:",
        path: str | os.PathLike[str] | None = None,
        collection: str = "prime_docs",
        encoder: TextEncoder | str | None = None,
        backend: str | PredictorBackend = "eager",
        onnx_path: str | os.PathLike[str] | None = None,
        api_key: str | None = None,
        device: str = "cpu",
        links: str | os.PathLike[str] | LinkGraph | None = None,
        **options: Any,
    ) -> PredictiveRetriever:
        """The common cases in one call.

        Args:
            checkpoint: a checkpoint directory; ``None`` builds a random-init small residual
                predictor (it reproduces the query-embedding baseline) and warns.
            store: a store spec (see :func:`open_store`) or a ready :class:`VectorStore`.
            encoder: a :class:`TextEncoder`, or a spec of
                :func:`~prime_retriever.text.fast_encoder.load_encoder`: ``None``/``"fast"`` (the bundled
                MiniLM on the fastest path that agrees with fp32 eager), ``"eager"``, ``"onnx-int8"``, a
                packaged model (``"bge-small-en-v1.5"``) or a model folder (on its fast path).
            backend: ``"eager"``, ``"fast"``/``"compiled"``, ``"onnx"``, or a ready backend.
            links: the corpus's :class:`~prime_retriever.retrieval.link_graph.LinkGraph` (or its JSON file),
                for a checkpoint trained with link expansion (``link_candidates`` > 0 in its config).
            options: keyword arguments of :class:`PredictiveRetriever`.
        """
        enc: TextEncoder = encoder if encoder is not None and not isinstance(encoder, str) else load_encoder(encoder)
        calibration: ScoreConfidence | None = None
        if isinstance(backend, str):
            if checkpoint is not None:
                loaded = load_checkpoint(Path(checkpoint), device=device)
                model_name = str(getattr(enc, "model_name", enc.name))  # the model, whatever path runs it
                if loaded.meta.encoder is not None and loaded.meta.encoder.name not in (enc.name, model_name):
                    _log.warning(
                        "checkpoint %s was trained with encoder %r, the retriever uses %r",
                        checkpoint, loaded.meta.encoder.name, enc.name,
                    )
                model = loaded.model
                calibration = loaded.meta.score_confidence
            else:
                warnings.warn(
                    "no checkpoint given: using a random-init residual predictor (= the query-embedding baseline)",
                    stacklevel=2,
                )
                model = random_predictor(enc.dim)
            be = make_backend(model, backend, onnx_path=onnx_path)
        else:
            be = backend
        if "expansion" not in options:
            options["expansion"] = _expansion_for(getattr(be, "config", None), links)
        options.setdefault("score_confidence", calibration)
        vs = open_store(store, path=path, collection=collection, api_key=api_key)
        return cls(be, enc, vs, **options)

    # ------------------------------------------------------------------ lifecycle

    async def _ensure_ready(self) -> None:
        if self._closed:
            raise RetrieverError("the retriever is closed")
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        if self._ready:
            return
        # One shared future rather than a lock: the callers that arrived while the collection opened all
        # wake in the same loop iteration, so they still reach the micro-batcher together (through a
        # lock they would trickle in one per iteration, and the first would go alone).
        if self._opening is None:
            self._opening = asyncio.ensure_future(self._open_collection())
        opening = self._opening
        try:
            await asyncio.shield(opening)  # a cancelled caller does not cancel the others' open
        except BaseException:
            if opening.done() and self._opening is opening:
                self._opening = None  # it failed: the next call tries again
            raise

    async def _open_collection(self) -> None:
        await call_store(
            self.store.name, "ensure_collection",
            lambda: self.store.ensure_collection(self.dim, self.encoder.name, sparse=self.bm25 is not None),
            self.retry,
        )
        self._ready = True

    async def warmup(self) -> None:
        """Open the collection, and warm (compile) the predictor and the encoder on the worker thread."""
        await self._ensure_ready()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self.backend.warmup)
        await loop.run_in_executor(self._executor, self._pipeline.encode_now, ["warmup"])

    async def close(self) -> None:
        """Finish the searches in flight, stop the PREPARE tasks, the worker thread and (if owned) the store."""
        if self._closed:
            return
        self._closed = True
        await self._batcher.close()
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self.owns_store:
            await self.store.close()

    async def __aenter__(self) -> PredictiveRetriever:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def batch_stats(self) -> Any:
        """The micro-batcher's counters (:class:`~prime_retriever.retrieval.micro_batcher.BatchStats`)."""
        return self._batcher.stats

    # ------------------------------------------------------------------ public API

    async def search(
        self,
        context: ContextInput,
        query: QueryInput,
        k: int = 5,
        filter: Any = None,
        session_id: str | None = None,
        exclude_ids: Iterable[str] = (),
    ) -> SearchResult:
        """The ``k`` documents nearest to the predicted ideal context, best first.

        ``context``: texts (oldest first) or embeddings N × D; beyond ``max_context_length`` the
        most recent turns are kept. ``query``: a text or an embedding (D,). ``filter``: a
        ``qdrant_client.models.Filter``. With ``session_id`` a close-enough PREPAREd prediction is
        served from the cache.

        Raises:
            PredictorError: invalid input (raised before any I/O).
            RetrieverError: the store stayed unavailable after the bounded retries.
            StoreError: the store refused permanently (e.g. an unsupported filter).
            EncoderError: the encoder failed.
        """
        # a reranked search fetches the reranker's top_n (an invalid k is left to the validator's error)
        top_n = self.reranker.top_n if self.reranker is not None and isinstance(query, str) else 0
        depth = max(k, top_n) if top_n and is_valid_k(k) else k
        req = self._validator.request("search", context, query, depth, filter, exclude_ids, session_id)
        await self._ensure_ready()
        t0 = time.perf_counter()
        out = await self._batcher.submit(req)
        docs = out.docs[: req.k]
        if top_n and req.query_text is not None:
            docs = await self._rerank(req.query_text, docs)
        latency = time.perf_counter() - t0
        if session_id is not None:
            self.cache.record_latency(out.source == "cache", latency)
        return SearchResult(hits_from(docs[:k], out.source), confidence=out.confidence, source=out.source,
                            latency_s=latency)

    async def _rerank(self, query: str, docs: list[ScoredDoc]) -> list[ScoredDoc]:
        """The reranker's order of ``docs``, or ``docs`` unchanged (and a warning) if it fails."""
        assert self.reranker is not None
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self.reranker.rerank, query, docs)
        except Exception as exc:
            _log.warning("reranker %r failed (%r); serving the first stage's hits",
                         self.reranker.cross_encoder.name, exc)
            return docs

    async def predict_vector(
        self, context: ContextInput, query: QueryInput, filter: Any = None, exclude_ids: Iterable[str] = ()
    ) -> npt.NDArray[np.float32]:
        """The unit vector (O,) that :meth:`search` with these arguments sends to the store, without the search.

        For a framework's own retriever to search with (LlamaIndex's ``QueryBundle.embedding``,
        Haystack's embedding retrievers). The validation, encoding, link expansion (its seed search and
        vector lookup, under ``filter``) and predictor are :meth:`search`'s, and a failed prediction
        gives the query embedding as search's fallback does: it is the batch pipeline's own vector, taken
        before the cache and the search, and concurrent calls are micro-batched with searches.

        Raises:
            PredictorError: invalid input (raised before any I/O).
            EncoderError: the encoder failed or gave a non-finite embedding.
            RetrieverError / StoreError: the link expansion's store calls failed.
        """
        req = self._validator.request("predict", context, query, 1, filter, exclude_ids, None)
        await self._ensure_ready()
        out = await self._batcher.submit(req)
        return np.asarray(out.vector, dtype=np.float32)  # (O,)

    async def search_baseline(
        self, query: QueryInput, k: int = 5, filter: Any = None, exclude_ids: Iterable[str] = ()
    ) -> SearchResult:
        """Search with the raw query embedding (no predictor, no batching, no cache): the benchmark baseline."""
        req = self._validator.request("search", "baseline", query, k, filter, exclude_ids, None)
        await self._ensure_ready()
        t0 = time.perf_counter()
        if req.query_vec is not None:
            q = req.query_vec
        else:
            assert req.query_text is not None
            q = (await self._pipeline.encode([req.query_text]))[req.query_text]
        docs = await call_store(
            self.store.name, "search",
            lambda: self.store.search(q, req.k, filter=req.filter, exclude_ids=req.exclude_ids), self.retry,
        )
        return SearchResult(hits_from(docs, "baseline"), confidence=0.0, source="baseline",
                            latency_s=time.perf_counter() - t0)

    async def prepare(
        self,
        session_id: str,
        context: ContextInput,
        *,
        query: QueryInput | None = None,
        k: int | None = None,
        filter: Any = None,
        exclude_ids: Iterable[str] = (),
    ) -> SearchResult:
        """PREPARE state: predict from the context alone, search, and cache (prediction, hits) for ``session_id``.

        The last context turn stands in for the query unless ``query`` is given. ``k`` defaults
        to ``prepare_k``; a later search asking for more hits than were prepared is not served
        from the cache. A prediction that fell back to the query embedding is not cached.
        """
        return await self._run_prepare(
            self._prepare_request(session_id, context, query=query, k=k, filter=filter, exclude_ids=exclude_ids)
        )

    async def _run_prepare(self, req: Request) -> SearchResult:
        assert req.session_id is not None
        await self._ensure_ready()
        t0 = time.perf_counter()
        out = await self._batcher.submit(req)
        if out.source == "predicted":  # _depth(k) hits, so a later search of k finds the two its confidence reads
            depth = self._pipeline.depth(req.k)
            self.cache.put(req.session_id, out.vector, out.docs[:depth], depth, req.filter, req.exclude_ids)
        return SearchResult(hits_from(out.docs[: req.k], out.source), confidence=out.confidence, source=out.source,
                            latency_s=time.perf_counter() - t0)

    def _prepare_request(
        self, session_id: str, context: ContextInput, *, query: QueryInput | None = None, k: int | None = None,
        filter: Any = None, exclude_ids: Iterable[str] = (),
    ) -> Request:
        """The validated request of :meth:`prepare` (``k`` defaults to ``prepare_k``)."""
        if not isinstance(session_id, str) or not session_id:
            raise PredictorError(f"session_id must be a non-empty str; got {session_id!r}")
        k = self.prepare_k if k is None else k
        return self._validator.request("prepare", context, query, k, filter, exclude_ids, session_id)

    def on_prepare(
        self, session_id: str, context: ContextInput, **kwargs: Any
    ) -> asyncio.Task[SearchResult | None] | concurrent.futures.Future[SearchResult | None]:
        """A plain (sync) callback for a boundary detector: schedule :meth:`prepare` and return at once.

        Called on the event loop's thread it returns an ``asyncio.Task``; from any other thread it
        returns a ``concurrent.futures.Future`` (the retriever must have been used on its loop
        before, e.g. by :meth:`warmup`). Invalid input raises here; failures of the scheduled
        prepare are logged, never raised (its result is then ``None``).
        """
        req = self._prepare_request(session_id, context, **kwargs)  # an unknown keyword is a TypeError here
        coro = self._prepare_quietly(req)  # the validated request: its inputs are read once
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None and (self._loop is None or running is self._loop):
            task = running.create_task(coro, name=f"prepare:{session_id}")
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            return task
        loop = self._loop
        if loop is None or loop.is_closed():
            coro.close()
            raise RetrieverError("on_prepare from another thread needs the retriever's loop: await warmup() first")
        return asyncio.run_coroutine_threadsafe(coro, loop)

    async def _prepare_quietly(self, req: Request) -> SearchResult | None:
        try:
            return await self._run_prepare(req)
        except Exception as exc:
            _log.warning("prepare(%r) failed: %r", req.session_id, exc)
            return None

    async def index(self, corpus: Iterable[Document] | str | os.PathLike[str], **kwargs: Any) -> IndexReport:
        """Encode and upsert a corpus (documents or a JSONL path).

        See :func:`prime_retriever.retrieval.indexing.index_documents` for the keyword arguments.
        """
        if self._closed:
            raise RetrieverError("the retriever is closed")
        docs = read_corpus_jsonl(corpus) if isinstance(corpus, str | os.PathLike) else corpus
        kwargs.setdefault("encoder", self.encoder)
        kwargs.setdefault("retry", self.retry)
        kwargs.setdefault("bm25", self.bm25)
        report = await index_documents(self.store, docs, **kwargs)
        self._ready = True
        return report
