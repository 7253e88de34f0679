"""The batch pipeline behind every search and prepare: encode -> expand -> predict -> cache -> search.

One :meth:`BatchPipeline.process_batch` call serves one micro-batch (shapes: B batch, N turns, D encoder
dim, O = D):

1. encode every text of the batch in one encoder call, on the worker thread (an in-memory cache of
   text embeddings means a PREPAREd context is not encoded again by its search);
2. link expansion (:class:`~prime_retriever.retrieval.link_graph.LinkExpansion`), when the predictor was
   trained with it: one ``search_batch`` for the seeds, one vector lookup;
3. one predictor forward for the batch (contexts padded to B × N × D with a B × N mask), on the worker
   thread; a failing or non-finite prediction falls back to the query embedding;
4. searches whose session was PREPAREd and whose prediction is close to the prepared one are answered
   from the :class:`~prime_retriever.retrieval.predictive_cache.PredictiveCache`;
5. one ``search_batch`` for the rest (bounded retries); a permanent refusal reaches only its own caller.
   With hybrid search (``bm25``) a search with a query text sends the BM25 vector of that text beside
   its predicted vector, and the store fuses the two rankings by RRF; such a search is never answered
   from the PREPARE cache (PREPARE did not know the query's words), and its confidence is the
   predictor head's (the score calibration reads cosine scores, not RRF ones).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from qdrant_client import models

from prime_retriever.backends.inference import PredictorBackend
from prime_retriever.errors import EncoderError, PredictorError, PrimeError, RetrieverError, StoreError
from prime_retriever.model.score_confidence import ScoreConfidence
from prime_retriever.retrieval.link_graph import LinkExpansion
from prime_retriever.retrieval.predictive_cache import PredictiveCache
from prime_retriever.retrieval.requests import FloatArray, Outcome, Request
from prime_retriever.retrieval.results import HitSource
from prime_retriever.stores.base import ScoredDoc, VectorStore, point_id
from prime_retriever.stores.retry import RetryPolicy, call_store
from prime_retriever.text.bm25 import Bm25Encoder, SparseVector
from prime_retriever.text.embedding_cache import CachedEncoder, MemoryEmbeddingCache
from prime_retriever.text.encoders import TextEncoder

__all__ = ["BatchPipeline", "PipelineParts"]

_log = logging.getLogger(__name__)


@dataclass
class PipelineParts:
    """What the pipeline runs on."""

    backend: PredictorBackend
    encoder: TextEncoder
    store: VectorStore
    cache: PredictiveCache
    retry: RetryPolicy
    expansion: LinkExpansion | None = None
    score_confidence: ScoreConfidence | None = None
    text_cache_size: int = 4096
    bm25: Bm25Encoder | None = None  # hybrid search: the query text's BM25 half


class BatchPipeline:
    """Serves micro-batches of :class:`~prime_retriever.retrieval.requests.Request` (see the module docstring).

    The encoder and the predictor run on ``executor`` (one worker thread), never on the event loop.
    """

    def __init__(self, parts: PipelineParts, executor: ThreadPoolExecutor) -> None:
        self.backend = parts.backend
        self.encoder = parts.encoder
        self.store = parts.store
        self.cache = parts.cache
        self.retry = parts.retry
        self.expansion = parts.expansion
        self.score_confidence = parts.score_confidence
        self.bm25 = parts.bm25
        self.dim = parts.encoder.dim
        self.executor = executor
        # the text cache: served from memory, never written to disk by the retriever
        self.text_encoder: TextEncoder = (
            CachedEncoder(parts.encoder, MemoryEmbeddingCache(parts.text_cache_size))
            if parts.text_cache_size else parts.encoder
        )
        self.fallbacks = 0  # searches served by the fallback path (monitoring)

    def encode_now(self, texts: list[str]) -> FloatArray:
        """Embeddings of ``texts`` (T × D), through the in-memory text cache; on the calling thread."""
        return np.asarray(self.text_encoder.encode(texts, batch_size=64, show_progress=False), dtype=np.float32)

    async def encode(self, texts: Iterable[str]) -> dict[str, FloatArray]:
        """Embeddings of ``texts`` (unique), one encoder call on the worker thread."""
        todo = list(dict.fromkeys(texts))
        if not todo:
            return {}
        loop = asyncio.get_running_loop()
        try:
            vecs = await loop.run_in_executor(self.executor, self.encode_now, todo)  # T × D
        except PrimeError:
            raise
        except Exception as exc:
            raise EncoderError(f"encoder {self.encoder.name!r} failed: {exc!r}") from exc
        if vecs.shape != (len(todo), self.dim):
            raise EncoderError(f"encoder {self.encoder.name!r} returned {vecs.shape} for {len(todo)} texts")
        return dict(zip(todo, vecs, strict=True))

    def predict_now(
        self, ctx: FloatArray, q: FloatArray, mask: npt.NDArray[np.bool_] | None
    ) -> tuple[FloatArray, FloatArray]:
        # a static-shape backend has a largest batch: run the batch in chunks of it
        step = int(getattr(self.backend, "max_batch_size", 0) or len(q))
        embs: list[FloatArray] = []
        confs: list[FloatArray] = []
        for s in range(0, len(q), step):
            m = None if mask is None else mask[s : s + step]
            emb, conf = self.backend.predict(ctx[s : s + step], q[s : s + step], m)  # b × O, b
            embs.append(np.asarray(emb, dtype=np.float32))
            confs.append(np.asarray(conf, dtype=np.float32).reshape(-1))
        return np.concatenate(embs), np.concatenate(confs)

    async def predict(self, ctxs: list[FloatArray], queries: FloatArray
                       ) -> tuple[FloatArray | None, FloatArray | None]:
        """One forward for the batch (padded contexts + mask); ``(None, None)`` if the predictor failed."""
        B = len(ctxs)
        n_max = max(c.shape[0] for c in ctxs)
        padded = np.zeros((B, n_max, self.dim), np.float32)  # B × N × D
        mask = np.zeros((B, n_max), bool)  # B × N, True = real turn
        for i, turns in enumerate(ctxs):
            padded[i, : turns.shape[0]] = turns
            mask[i, : turns.shape[0]] = True
        loop = asyncio.get_running_loop()
        try:
            emb, conf = await loop.run_in_executor(
                self.executor, self.predict_now, padded, queries, None if mask.all() else mask
            )
            if emb.shape != (B, self.dim) or conf.shape != (B,):
                raise PredictorError(f"predictor returned shapes {emb.shape}, {conf.shape} for a batch of {B}")
        except Exception as exc:
            _log.warning(
                "predictor %r failed on a batch of %d (%r); falling back to the query embedding",
                getattr(self.backend, "name", type(self.backend).__name__), B, exc,
            )
            return None, None
        return emb, conf

    async def expand(
        self, reqs: Sequence[Request], live: list[int], ctxs: list[FloatArray], queries: FloatArray
    ) -> list[FloatArray]:
        """Link expansion for the ``live`` requests: one ``search_batch`` for the seeds, one vector lookup.

        Returns the contexts with each request's selected linked documents prepended (N_i' × D).
        """
        exp = self.expansion
        assert exp is not None
        seeds: list[list[str]] = [[] for _ in live]
        if exp.seeds > 0:
            qs = queries[live] / np.maximum(np.linalg.norm(queries[live], axis=1, keepdims=True), 1e-12)  # L × D
            filters = [reqs[i].filter for i in live]
            excl = [list(reqs[i].exclude_ids) for i in live]
            found = await call_store(
                self.store.name, "search_batch",
                lambda: self.store.search_batch(qs, exp.seeds, filters=filters, exclude_ids=excl), self.retry,
            )
            seeds = [[d.doc_id for d in docs] for docs in found]
        cands: list[list[str]] = []
        for j, i in enumerate(live):
            r = reqs[i]
            texts = [*(r.context_texts or []), *([r.query_text] if r.query_text else [])]
            cands.append(exp.graph.candidates(texts, seeds[j], exclude=r.exclude_ids))
        await self._keep_in_filter(reqs, live, cands)
        wanted = list(dict.fromkeys(c for cs in cands for c in cs))
        vectors: dict[str, FloatArray] = {}
        if wanted:
            vectors = await call_store(self.store.name, "retrieve", lambda: self.store.get_vectors(wanted), self.retry)
        out = list(ctxs)
        for j, i in enumerate(live):
            picked = exp.select(queries[i], cands[j], vectors)
            if picked:
                out[i] = np.concatenate([np.stack([vectors[c] for c in picked]), ctxs[i]])  # (C_i + N_i) × D
        return out

    async def _keep_in_filter(self, reqs: Sequence[Request], live: list[int], cands: list[list[str]]) -> None:
        """Drop, in place, the candidates a filtered request may not see (another user's memory must
        not reach the predictor as context): one ``search_batch`` restricted to the candidates' ids."""
        rows = [j for j, i in enumerate(live) if reqs[live[j]].filter is not None and cands[j]]
        if not rows:
            return
        flts = [
            models.Filter(must=[reqs[live[j]].filter, models.HasIdCondition(has_id=[point_id(c) for c in cands[j]])])
            for j in rows
        ]
        k = max(len(cands[j]) for j in rows)
        probe = np.zeros((len(rows), self.dim), np.float32)  # R × D: any direction; only membership matters
        probe[:, 0] = 1.0
        found = await call_store(
            self.store.name, "search_batch",
            lambda: self.store.search_batch(probe, k, filters=flts), self.retry,
        )
        for j, docs in zip(rows, found, strict=True):
            allowed = {d.doc_id for d in docs}
            cands[j] = [c for c in cands[j] if c in allowed]

    async def search_rows(
        self, mat: FloatArray, k: int, filters: list[Any], excl: list[list[str]],
        sparse: list[SparseVector | None] | None = None,
    ) -> list[list[ScoredDoc] | BaseException]:
        """One ``search_batch`` for the rows of ``mat`` (S × O) (hybrid where ``sparse`` has a row's BM25
        query); per row, its hits or its error.

        A store that stays down fails every row. A permanent refusal (a :class:`StoreError`, e.g.
        one request's filter the backend cannot run) is retried row by row, so it reaches only the
        caller whose request caused it.
        """
        async def batch(rows: slice) -> list[list[ScoredDoc]]:
            found = await call_store(
                self.store.name, "search_batch",
                lambda: self.store.search_batch(mat[rows], k, filters=filters[rows], exclude_ids=excl[rows],
                                                sparse=None if sparse is None else sparse[rows]),
                self.retry,
            )
            n = len(mat[rows])
            if len(found) != n:
                raise RetrieverError(f"store {self.store.name!r}: search_batch returned {len(found)} lists for {n}")
            return [list(docs) for docs in found]

        try:
            return list(await batch(slice(None)))  # a new list: list is invariant in its element type
        except StoreError as exc:
            if len(mat) == 1:
                return [exc]
        except Exception as exc:
            return [exc] * len(mat)
        out: list[list[ScoredDoc] | BaseException] = []
        for r in range(len(mat)):
            try:
                out.append((await batch(slice(r, r + 1)))[0])
            except Exception as exc:
                out.append(exc)
        return out

    def depth(self, k: int) -> int:
        """Hits to fetch for a search of ``k``: the score confidence reads the first two."""
        return max(k, 2) if self.score_confidence is not None else k

    def confidence(self, docs: Sequence[ScoredDoc], head: float) -> float:
        """The search's confidence: from its hits' scores (best first) if calibrated, else the head's ``head``."""
        if self.score_confidence is None:
            return head
        try:
            return self.score_confidence.probability([d.score for d in docs])
        except ValueError:  # a store gave a non-finite score: no evidence either way
            return 0.0

    async def _encode_batch(
        self, reqs: Sequence[Request], results: list[Outcome | BaseException | None]
    ) -> dict[str, FloatArray]:
        """The embeddings of every text of the batch, in one encoder call.

        When that call fails, each request's texts are encoded alone, so a text the encoder cannot
        take fails only the request that holds it (its slot of ``results`` gets the error).
        """
        def texts_of(r: Request) -> list[str]:
            return [*(r.context_texts or []), *([r.query_text] if r.query_text else [])]

        texts = [t for r in reqs for t in texts_of(r)]
        if not texts:
            return {}
        try:
            return await self.encode(texts)
        except Exception as exc:
            if len(reqs) == 1:
                results[0] = exc
                return {}
        emb: dict[str, FloatArray] = {}
        for i, r in enumerate(reqs):
            try:
                emb.update(await self.encode([t for t in texts_of(r) if t not in emb]))
            except Exception as one:
                results[i] = one
        return emb

    def _sparse_queries(
        self, reqs: Sequence[Request], live: list[int], results: list[Outcome | BaseException | None]
    ) -> dict[int, SparseVector]:
        """The BM25 query vector of each live search and prepare with a query text, by request index (a text
        the tokenizer cannot take fails its own request only)."""
        out: dict[int, SparseVector] = {}
        if self.bm25 is None:
            return out
        for i in live:
            r = reqs[i]  # a prepare's query text is its last turn (the requests module sets it)
            if r.kind == "predict" or r.query_text is None:
                continue
            try:
                out[i] = self.bm25.embed_query(r.query_text)
            except Exception as exc:
                results[i] = exc
        return out

    async def process_batch(self, reqs: Sequence[Request]) -> list[Outcome | BaseException]:
        results: list[Outcome | BaseException | None] = [None] * len(reqs)
        # 1. encode every text of the batch at once
        emb = await self._encode_batch(reqs, results)
        ctxs: list[FloatArray] = []
        queries = np.zeros((len(reqs), self.dim), np.float32)  # B × D
        for i, r in enumerate(reqs):
            if results[i] is not None:  # its texts could not be encoded: a placeholder row, never used
                ctxs.append(queries[i : i + 1])
                continue
            turns = r.context_vecs if r.context_vecs is not None else np.stack([emb[t] for t in r.context_texts or []])
            ctxs.append(turns)  # N_i × D
            queries[i] = r.query_vec if r.query_vec is not None else emb[r.query_text or ""]
            if not (np.isfinite(queries[i]).all() and np.isfinite(turns).all()):
                results[i] = EncoderError(f"encoder {self.encoder.name!r} produced a non-finite embedding")
        live = [i for i in range(len(reqs)) if results[i] is None]
        if live and self.expansion is not None:
            try:
                ctxs = await self.expand(reqs, live, ctxs, queries)
            except StoreError as exc:  # permanent: maybe one request's filter; find whose, alone
                if len(live) == 1:
                    results[live[0]] = exc
                else:
                    for i in live:
                        try:
                            ctxs = await self.expand(reqs, [i], ctxs, queries)
                        except Exception as one:
                            results[i] = one
            except Exception as exc:  # the store is down: every caller of the batch gets it
                for i in live:
                    results[i] = exc
            live = [i for i in live if results[i] is None]
        if not live:
            return [r for r in results if r is not None]
        # 2. one predictor forward
        pred, conf = await self.predict([ctxs[i] for i in live], queries[live])
        vectors: dict[int, tuple[FloatArray, float, HitSource]] = {}
        failed_rows = 0
        for j, i in enumerate(live):
            fallback = queries[i] / max(float(np.linalg.norm(queries[i])), 1e-12)
            if pred is None or conf is None:
                vectors[i] = (fallback, 0.0, "fallback")
            elif not np.isfinite(pred[j]).all() or float(np.linalg.norm(pred[j])) == 0.0:
                failed_rows += 1
                vectors[i] = (fallback, 0.0, "fallback")
            else:
                cf = float(conf[j]) if math.isfinite(float(conf[j])) else 0.0
                vectors[i] = (pred[j], cf, "predicted")
        if failed_rows:
            _log.warning("predictor returned %d non-finite prediction(s); falling back to the query embedding",
                         failed_rows)
        # 3. the BM25 half of hybrid searches, then the PREPARE cache
        sparse = self._sparse_queries(reqs, live, results)
        to_search: list[int] = []
        for i in live:
            r = reqs[i]
            if results[i] is not None:  # its query text could not be tokenized
                continue
            vec, cf, src = vectors[i]
            if src == "fallback":
                self.fallbacks += 1
            if r.kind == "predict":  # the vector search would send; no cache, no search
                results[i] = Outcome([], src, cf, vec)
                continue
            if r.kind == "search" and r.session_id is not None and sparse.get(i) is None:
                docs = None if src == "fallback" else self.cache.lookup(
                    r.session_id, vec, self.depth(r.k), r.filter, r.exclude_ids
                )
                if src == "fallback":
                    self.cache.stats.misses += 1
                if docs is not None:
                    results[i] = Outcome(docs, "cache", self.confidence(docs, cf), vec)
                    continue
            to_search.append(i)
        # 4. one search_batch for the rest
        if to_search:
            k_max = self.depth(max(reqs[i].k for i in to_search))
            mat = np.stack([vectors[i][0] for i in to_search])  # S × O
            filters = [reqs[i].filter for i in to_search]
            excl = [list(reqs[i].exclude_ids) for i in to_search]
            rows = [sparse.get(i) for i in to_search] if sparse else None
            found = await self.search_rows(mat, k_max, filters, excl, rows)
            for i, docs_or_exc in zip(to_search, found, strict=True):
                if isinstance(docs_or_exc, BaseException):
                    results[i] = docs_or_exc
                else:
                    vec, cf, src = vectors[i]
                    cosine = sparse.get(i) is None  # RRF scores are no cosine scores to calibrate
                    score_conf = cf if src == "fallback" or not cosine else self.confidence(docs_or_exc, cf)
                    results[i] = Outcome(docs_or_exc, src, score_conf, vec)
        out: list[Outcome | BaseException] = []
        for res in results:
            assert res is not None
            out.append(res)
        return out
