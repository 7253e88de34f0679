"""The predictive retriever: predict the ideal context's embedding, then search the store with it.

::

    async with PredictiveRetriever.from_config("ckpt/", store="edge:/data/index") as retriever:
        await retriever.warmup()
        await retriever.prepare("session-1", ["user: ...", "assistant: ..."])  # PREPARE state
        hits = await retriever.search(context, query, k=5, session_id="session-1")
        for hit in hits:
            print(hit.doc_id, hit.score, hit.source)  # "predicted" | "cache" | "fallback"

Pipeline of one :meth:`PredictiveRetriever.search` (shapes: B batch, N turns, D encoder dim, O = D):

1. validate the inputs (before any I/O), keep the most recent ``max_context_length`` turns;
2. wait a few milliseconds for concurrent searches (:class:`~prime_retriever.micro_batcher.MicroBatcher`);
3. encode every text of the batch in one encoder call, on the worker thread;
4. one predictor forward for the batch (contexts padded to B × N × D with a B × N mask), on the
   worker thread; a failing or non-finite prediction falls back to the query embedding;
5. searches whose session was PREPAREd and whose prediction is close to the prepared one are
   answered from the :class:`~prime_retriever.predictive_cache.PredictiveCache`;
6. one ``search_batch`` for the rest (bounded retries, exponential backoff, per-call timeout);
7. each caller gets exactly its own hits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import os
import time
import warnings
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt
from qdrant_client import models

from prime_retriever.errors import EncoderError, PredictorError, PrimeError, RetrieverError, StoreError
from prime_retriever.inference import EagerPredictor, PredictorBackend
from prime_retriever.micro_batcher import MicroBatcher
from prime_retriever.predictive_cache import PredictiveCache
from prime_retriever.score_confidence import ScoreConfidence
from prime_retriever.store import MAX_K, ScoredDoc, StoreUnavailableError, VectorStore, is_valid_k, point_id

if TYPE_CHECKING:
    from prime_retriever.documents import Document
    from prime_retriever.encoders import TextEncoder
    from prime_retriever.indexing import IndexReport
    from prime_retriever.link_graph import LinkExpansion, LinkGraph
    from prime_retriever.predictor import EmbeddingPredictor

__all__ = [
    "ContextInput",
    "Hit",
    "HitSource",
    "PredictiveRetriever",
    "QueryInput",
    "RetryPolicy",
    "SearchResult",
    "call_store",
    "make_backend",
    "open_store",
    "random_predictor",
]

_log = logging.getLogger(__name__)

_T = TypeVar("_T")
FloatArray = npt.NDArray[np.float32]

#: Which path served a hit: the predicted embedding, the PREPARE cache, the query-embedding
#: fallback after a predictor failure, or :meth:`PredictiveRetriever.search_baseline`.
HitSource = Literal["predicted", "cache", "fallback", "baseline"]
#: A conversation: one text, a list of texts (oldest first), or embeddings N × D (or one D vector).
ContextInput = str | Sequence[str] | npt.NDArray[Any] | Sequence[npt.NDArray[Any]]
#: The query: a text or an embedding (D,).
QueryInput = str | npt.NDArray[Any]


# ---------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Hit:
    """One retrieved document, and the path that served it (``source``)."""

    doc_id: str
    score: float
    payload: dict[str, Any]
    source: HitSource

    @property
    def title(self) -> str:
        return str(self.payload.get("title", ""))

    @property
    def text(self) -> str:
        return str(self.payload.get("text", ""))


class SearchResult(list[Hit]):
    """The hits of one search, best first (a ``list`` of :class:`Hit`), with search-level facts.

    Attributes:
        confidence: P(the top hit is a gold document), in [0, 1]: from the hits' scores when the
            checkpoint carries a :class:`~prime_retriever.score_confidence.ScoreConfidence`
            (the benchmark's AUROC of it is in the README), else the predictor's own
            confidence head (0.0 on the fallback and baseline paths).
        source: the path that served the hits (every hit carries the same value).
        latency_s: end-to-end latency of the call, in seconds.
    """

    confidence: float
    source: HitSource
    latency_s: float

    def __init__(
        self, hits: Iterable[Hit] = (), *, confidence: float = 0.0, source: HitSource = "predicted",
        latency_s: float = 0.0,
    ) -> None:
        super().__init__(hits)
        self.confidence = confidence
        self.source = source
        self.latency_s = latency_s

    @property
    def doc_ids(self) -> list[str]:
        return [h.doc_id for h in self]

    def __repr__(self) -> str:
        return (
            f"SearchResult({list.__repr__(self)}, confidence={self.confidence:.3f}, "
            f"source={self.source!r}, latency_s={self.latency_s:.4f})"
        )


def _hits(docs: Iterable[ScoredDoc], source: HitSource) -> list[Hit]:
    # payloads are copied: cached hits are shared by several searches
    return [Hit(doc_id=d.doc_id, score=float(d.score), payload=dict(d.payload), source=source) for d in docs]


# ---------------------------------------------------------------------------------------- store calls


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries of store calls.

    ``attempts`` tries in all; before try ``i + 1`` wait ``min(base_delay_s * 2**i, max_delay_s)``;
    each try is bounded by ``timeout_s`` (``asyncio.wait_for``), so a hanging store fails too.
    Retried: :class:`StoreUnavailableError`, timeouts and any non-prime exception. Not retried: a
    plain :class:`StoreError` (a permanent refusal, e.g. an encoder mismatch), raised unchanged.
    """

    attempts: int = 3
    base_delay_s: float = 0.05
    max_delay_s: float = 2.0
    timeout_s: float | None = 10.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {self.attempts}")
        if self.base_delay_s < 0 or self.max_delay_s < 0:
            raise ValueError("retry delays must be >= 0")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive or None, got {self.timeout_s}")

    def delay(self, attempt: int) -> float:
        """Back-off before retry number ``attempt + 1`` (``attempt`` counts from 0)."""
        return float(min(self.base_delay_s * (2**attempt), self.max_delay_s))


async def call_store(store_name: str, what: str, fn: Callable[[], Awaitable[_T]], policy: RetryPolicy) -> _T:
    """Await ``fn()`` under ``policy``; raise :class:`RetrieverError` naming the store when retries run out."""
    last: BaseException | None = None
    for attempt in range(policy.attempts):
        try:
            if policy.timeout_s is None:
                return await fn()
            return await asyncio.wait_for(fn(), policy.timeout_s)
        except StoreUnavailableError as exc:
            last = exc
        except StoreError:
            raise  # permanent: retrying cannot help
        except PrimeError:
            raise
        except TimeoutError:
            last = TimeoutError(f"no answer within {policy.timeout_s}s")
        except Exception as exc:
            last = exc
        if attempt + 1 < policy.attempts:
            delay = policy.delay(attempt)
            _log.warning(
                "store %s: %s failed (attempt %d/%d: %r); retrying in %.3fs",
                store_name, what, attempt + 1, policy.attempts, last, delay,
            )
            await asyncio.sleep(delay)
    raise RetrieverError(
        f"store {store_name!r}: {what} failed after {policy.attempts} attempt(s): {last!r}"
    ) from last


# ---------------------------------------------------------------------------------------- requests


@dataclass
class _Request:
    """One validated search or prepare, as queued in the micro-batcher."""

    kind: Literal["search", "prepare"]
    context_texts: list[str] | None  # N texts (already truncated)
    context_vecs: FloatArray | None  # N × D (already truncated)
    query_text: str | None
    query_vec: FloatArray | None  # (D,)
    k: int
    filter: Any
    exclude_ids: tuple[str, ...]
    session_id: str | None


@dataclass
class _Outcome:
    """What the batch produced for one request."""

    docs: list[ScoredDoc]  # best first, as fetched: at least the request's k where the store holds them
    source: HitSource
    confidence: float
    vector: FloatArray = field(repr=False)  # (O,) the vector that was compared/searched


# ---------------------------------------------------------------------------------------- construction helpers


def random_predictor(dim: int = 384, *, seed: int = 0, perturb: float = 0.0, **overrides: Any) -> EmbeddingPredictor:
    """A small random-init **residual** predictor (output = normalize(query + delta)).

    At init ``delta`` is exactly 0, so it reproduces the query-embedding baseline; ``perturb > 0``
    re-initialises the output projection with that standard deviation so the prediction moves
    away from the query (useful to exercise the predicted path in benchmarks and tests).
    """
    import torch

    from prime_retriever.config import PredictorConfig
    from prime_retriever.predictor import EmbeddingPredictor

    params: dict[str, Any] = {
        "input_dim": dim, "output_dim": dim, "hidden_dim": 128, "num_layers": 2, "num_heads": 4,
        "max_context_length": 8, "dropout": 0.0, "residual": True, "use_torch_compile": False,
    }
    params.update(overrides)
    torch.manual_seed(seed)
    model = EmbeddingPredictor(PredictorConfig(**params))
    if perturb > 0:
        torch.nn.init.normal_(model.output_proj.weight, std=perturb)
    return model.eval()


def make_backend(model: EmbeddingPredictor, backend: str = "eager", *, onnx_path: str | os.PathLike[str] | None = None
                 ) -> PredictorBackend:
    """Wrap ``model`` in a :class:`PredictorBackend`.

    ``"eager"``: plain torch; ``"fast"``: :func:`prime_retriever.fast.create_optimized_predictor`'s
    choice for the device; ``"compiled"``: its torch path; ``"onnx"``: the ONNX graph at ``onnx_path``
    (exported to a temporary folder when ``None``).
    """
    name = backend.lower()
    if name == "eager":
        return EagerPredictor(model)
    if name in ("fast", "auto", "compiled", "torch", "optimized"):
        from prime_retriever import fast

        # "fast": the fastest correct path for the device (int8 ONNX on CPU); "compiled": torch only
        kind: Literal["auto", "torch"] = "auto" if name in ("fast", "auto") else "torch"
        built: PredictorBackend = fast.create_optimized_predictor(model, backend=kind, warmup=False)
        return built
    if name == "onnx":
        import importlib

        onnx: Any = importlib.import_module("prime_retriever.onnx")
        if onnx_path is not None:
            return onnx.OnnxPredictor(Path(onnx_path), model.config)  # type: ignore[no-any-return]
        from prime_retriever import fast

        # fp32 export into a private temporary folder, removed with the backend
        exported: PredictorBackend = fast.create_optimized_predictor(
            model, device="cpu", backend="onnx", precision="fp32", warmup=False
        )
        return exported
    raise ValueError(f"unknown predictor backend {backend!r}; expected 'eager', 'fast', 'compiled' or 'onnx'")


def open_store(spec: str | VectorStore, *, path: str | os.PathLike[str] | None = None,
               collection: str = "prime_docs", api_key: str | None = None, timeout_s: float = 10.0) -> VectorStore:
    """Build a :class:`VectorStore` from a spec.

    * ``":memory:"`` (or ``"local"`` without ``path``): Qdrant local mode in memory;
    * ``"local"`` with ``path``, or ``"local:DIR"``: Qdrant local mode persisted under DIR;
    * ``"edge"`` with ``path``, or ``"edge:DIR"``: Qdrant Edge under DIR;
    * ``"http://..."`` / ``"https://..."``: a Qdrant server or cluster;
    * any other string: a directory for Qdrant local mode;
    * a :class:`VectorStore`: returned as is.
    """
    if not isinstance(spec, str):
        return spec
    from prime_retriever.qdrant_store import QdrantStore

    p = None if path is None else str(path)
    if spec.startswith(("http://", "https://")):
        return QdrantStore(collection, url=spec, api_key=api_key, timeout=timeout_s)
    if spec == ":memory:" or (spec == "local" and p is None):
        return QdrantStore(collection, location=":memory:")
    if spec == "local":
        return QdrantStore(collection, path=p)
    if spec.startswith("local:"):
        return QdrantStore(collection, path=spec[len("local:"):])
    if spec == "edge" or spec.startswith("edge:"):
        from prime_retriever.edge_store import EdgeStore

        where = spec[len("edge:"):] if spec.startswith("edge:") else p
        if not where:
            raise StoreError("the edge store needs a directory: 'edge:DIR' or path=DIR")
        return EdgeStore(where)
    if not spec:
        raise StoreError("empty store spec")
    return QdrantStore(collection, path=spec)


# ---------------------------------------------------------------------------------------- the retriever


def _expansion_for(config: Any, links: str | os.PathLike[str] | LinkGraph | None) -> LinkExpansion | None:
    """The :class:`LinkExpansion` a predictor's config asks for, built on ``links``."""
    from prime_retriever.link_graph import LinkExpansion, LinkGraph

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
        expansion: a :class:`~prime_retriever.link_graph.LinkExpansion` for a predictor trained with
            one (its config's ``link_candidates`` > 0): the linked documents join the context as its
            oldest turns, and the conversation keeps its most recent
            ``max_context_length - max_candidates`` turns.
        score_confidence: the search-score calibration of :attr:`SearchResult.confidence`
            (:class:`~prime_retriever.score_confidence.ScoreConfidence`; :meth:`from_config` takes
            the checkpoint's); ``None`` reports the predictor's confidence head instead.
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
    ) -> None:
        from prime_retriever.encoders import check_encoder_dims

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
        if expansion is not None and expansion.max_candidates >= self.max_context_length:
            raise ValueError(
                f"expansion.max_candidates ({expansion.max_candidates}) must be below the predictor's "
                f"max_context_length ({self.max_context_length})"
            )
        # turns of the conversation itself that the predictor sees
        self._keep_turns = self.max_context_length - (expansion.max_candidates if expansion is not None else 0)
        self._batcher: MicroBatcher[_Request, _Outcome] = MicroBatcher(
            self._process_batch, max_batch_size=max_batch_size, max_wait_s=batch_wait_s, enabled=micro_batching
        )
        # one worker thread for the encoder and the predictor: the loop never runs torch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prime-retriever")
        self._text_cache: OrderedDict[str, FloatArray] = OrderedDict()
        self._text_cache_size = text_cache_size
        self._ready = False
        self._ready_lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._closed = False
        self.fallbacks = 0  # searches served by the fallback path (monitoring)

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
            encoder: a :class:`TextEncoder`, a model folder, or ``None`` for the bundled MiniLM.
            backend: ``"eager"``, ``"fast"``/``"compiled"``, ``"onnx"``, or a ready backend.
            links: the corpus's :class:`~prime_retriever.link_graph.LinkGraph` (or its JSON file),
                for a checkpoint trained with link expansion (``link_candidates`` > 0 in its config).
            options: keyword arguments of :class:`PredictiveRetriever`.
        """
        from prime_retriever.encoders import HFTextEncoder

        enc: TextEncoder = encoder if encoder is not None and not isinstance(encoder, str) else HFTextEncoder(encoder)
        calibration: ScoreConfidence | None = None
        if isinstance(backend, str):
            if checkpoint is not None:
                from prime_retriever.checkpoint import load_checkpoint

                loaded = load_checkpoint(Path(checkpoint), device=device)
                if loaded.meta.encoder is not None and loaded.meta.encoder.name != enc.name:
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
        if self._ready_lock is None:
            self._ready_lock = asyncio.Lock()
        async with self._ready_lock:
            if not self._ready:
                await call_store(
                    self.store.name, "ensure_collection",
                    lambda: self.store.ensure_collection(self.dim, self.encoder.name), self.retry,
                )
                self._ready = True

    async def warmup(self) -> None:
        """Open the collection, and warm (compile) the predictor and the encoder on the worker thread."""
        await self._ensure_ready()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self.backend.warmup)
        await loop.run_in_executor(self._executor, self._encode_now, ["warmup"])

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
        """The micro-batcher's counters (:class:`~prime_retriever.micro_batcher.BatchStats`)."""
        return self._batcher.stats

    # ------------------------------------------------------------------ validation (no I/O)

    def _check_vectors(self, arr: npt.NDArray[Any], what: str) -> FloatArray:
        try:
            out = np.asarray(arr, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise PredictorError(f"{what} is not a numeric array: {exc}") from exc
        if out.shape[-1:] != (self.dim,):
            raise PredictorError(f"{what} must have last dimension {self.dim}; got shape {out.shape}")
        if not np.isfinite(out).all():
            raise PredictorError(f"{what} contains NaN or Inf")
        norms = np.linalg.norm(out.reshape(-1, self.dim), axis=1)
        if (norms == 0).any():
            raise PredictorError(f"{what} contains an all-zero embedding")
        return out

    def _context(self, context: ContextInput) -> tuple[list[str] | None, FloatArray | None]:
        """Validate a context; keep its most recent turns (``max_context_length`` less any link candidates)."""
        keep = self._keep_turns
        if isinstance(context, str):
            context = [context]
        if isinstance(context, np.ndarray):
            arr = context[None, :] if context.ndim == 1 else context
            if arr.ndim != 2:
                raise PredictorError(f"context embeddings must have shape (N, {self.dim}); got {context.shape}")
            if arr.shape[0] == 0:
                raise PredictorError("empty context: expected at least one turn")
            return None, self._check_vectors(arr[-keep:], "context")  # N × D
        if not isinstance(context, Sequence):
            raise PredictorError(f"context must be a str, a list of str, or an array; got {type(context).__name__}")
        items = list(context)
        if not items:
            raise PredictorError("empty context: expected at least one turn")
        if all(isinstance(t, str) for t in items):
            texts = [str(t) for t in items]
            empty = [i for i, t in enumerate(texts) if not t.strip()]
            if empty:
                raise PredictorError(f"empty context turn(s) at position(s) {empty}")
            return texts[-keep:], None
        if all(isinstance(t, np.ndarray) for t in items):
            rows = [np.asarray(t).reshape(-1) for t in items[-keep:]]
            if any(r.shape != (self.dim,) for r in rows):
                raise PredictorError(f"every context embedding must have shape ({self.dim},)")
            return None, self._check_vectors(np.stack(rows), "context")
        raise PredictorError("context turns must be all texts or all embeddings")

    def _query(self, query: QueryInput) -> tuple[str | None, FloatArray | None]:
        if isinstance(query, str):
            if not query.strip():
                raise PredictorError("empty query")
            return query, None
        if isinstance(query, np.ndarray):
            q = query.reshape(-1) if query.ndim == 2 and query.shape[0] == 1 else query
            if q.ndim != 1:
                raise PredictorError(f"query embedding must have shape ({self.dim},); got {query.shape}")
            return None, self._check_vectors(q, "query")
        raise PredictorError(f"query must be a str or an array; got {type(query).__name__}")

    def _request(
        self, kind: Literal["search", "prepare"], context: ContextInput, query: QueryInput | None, k: int,
        flt: Any, exclude_ids: Iterable[str], session_id: str | None,
    ) -> _Request:
        if not is_valid_k(k):
            raise PredictorError(f"k must be an integer in [1, {MAX_K}]; got {k!r}")
        if kind == "search" and query is None:
            raise PredictorError("query is required (got None); to predict from the context alone, use prepare()")
        if session_id is not None and (not isinstance(session_id, str) or not session_id):
            raise PredictorError(f"session_id must be a non-empty str or None; got {session_id!r}")
        if flt is not None and not isinstance(flt, models.Filter):
            raise PredictorError(f"filter must be a qdrant_client.models.Filter or None; got {type(flt).__name__}")
        if isinstance(exclude_ids, str | bytes) or not isinstance(exclude_ids, Iterable):
            raise PredictorError(
                f"exclude_ids must be an iterable of str doc ids (not one str); got {type(exclude_ids).__name__}"
            )
        excluded = tuple(exclude_ids)  # once: an iterator must not be used up by the check below
        if not all(isinstance(x, str) for x in excluded):
            raise PredictorError("exclude_ids must be an iterable of str doc ids")
        ctx_texts, ctx_vecs = self._context(context)
        if query is None:  # PREPARE: the last turn stands in for the query
            q_text = ctx_texts[-1] if ctx_texts is not None else None
            q_vec = ctx_vecs[-1] if ctx_vecs is not None else None
        else:
            q_text, q_vec = self._query(query)
        return _Request(kind, ctx_texts, ctx_vecs, q_text, q_vec, int(k), flt, excluded, session_id)

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
        req = self._request("search", context, query, k, filter, exclude_ids, session_id)
        await self._ensure_ready()
        t0 = time.perf_counter()
        out = await self._batcher.submit(req)
        latency = time.perf_counter() - t0
        if session_id is not None:
            self.cache.record_latency(out.source == "cache", latency)
        return SearchResult(_hits(out.docs[: req.k], out.source), confidence=out.confidence, source=out.source,
                            latency_s=latency)

    async def search_baseline(
        self, query: QueryInput, k: int = 5, filter: Any = None, exclude_ids: Iterable[str] = ()
    ) -> SearchResult:
        """Search with the raw query embedding (no predictor, no batching, no cache): the benchmark baseline."""
        req = self._request("search", "baseline", query, k, filter, exclude_ids, None)
        await self._ensure_ready()
        t0 = time.perf_counter()
        if req.query_vec is not None:
            q = req.query_vec
        else:
            assert req.query_text is not None
            q = (await self._encode([req.query_text]))[req.query_text]
        docs = await call_store(
            self.store.name, "search",
            lambda: self.store.search(q, req.k, filter=req.filter, exclude_ids=req.exclude_ids), self.retry,
        )
        return SearchResult(_hits(docs, "baseline"), confidence=0.0, source="baseline",
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

    async def _run_prepare(self, req: _Request) -> SearchResult:
        assert req.session_id is not None
        await self._ensure_ready()
        t0 = time.perf_counter()
        out = await self._batcher.submit(req)
        if out.source == "predicted":  # _depth(k) hits, so a later search of k finds the two its confidence reads
            depth = self._depth(req.k)
            self.cache.put(req.session_id, out.vector, out.docs[:depth], depth, req.filter, req.exclude_ids)
        return SearchResult(_hits(out.docs[: req.k], out.source), confidence=out.confidence, source=out.source,
                            latency_s=time.perf_counter() - t0)

    def _prepare_request(
        self, session_id: str, context: ContextInput, *, query: QueryInput | None = None, k: int | None = None,
        filter: Any = None, exclude_ids: Iterable[str] = (),
    ) -> _Request:
        """The validated request of :meth:`prepare` (``k`` defaults to ``prepare_k``)."""
        if not isinstance(session_id, str) or not session_id:
            raise PredictorError(f"session_id must be a non-empty str; got {session_id!r}")
        return self._request("prepare", context, query, self.prepare_k if k is None else k, filter, exclude_ids,
                             session_id)

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

    async def _prepare_quietly(self, req: _Request) -> SearchResult | None:
        try:
            return await self._run_prepare(req)
        except Exception as exc:
            _log.warning("prepare(%r) failed: %r", req.session_id, exc)
            return None

    async def index(self, corpus: Iterable[Document] | str | os.PathLike[str], **kwargs: Any) -> IndexReport:
        """Encode and upsert a corpus (documents or a JSONL path).

        See :func:`prime_retriever.indexing.index_documents` for the keyword arguments.
        """
        from prime_retriever.indexing import index_documents, read_corpus_jsonl

        if self._closed:
            raise RetrieverError("the retriever is closed")
        docs = read_corpus_jsonl(corpus) if isinstance(corpus, str | os.PathLike) else corpus
        kwargs.setdefault("encoder", self.encoder)
        kwargs.setdefault("retry", self.retry)
        report = await index_documents(self.store, docs, **kwargs)
        self._ready = True
        return report

    # ------------------------------------------------------------------ the batch

    def _encode_now(self, texts: list[str]) -> FloatArray:
        return np.asarray(self.encoder.encode(texts, batch_size=64, show_progress=False), dtype=np.float32)

    async def _encode(self, texts: Iterable[str]) -> dict[str, FloatArray]:
        """Embeddings of ``texts`` (unique, via the text LRU), one encoder call on the worker thread."""
        out: dict[str, FloatArray] = {}
        todo: list[str] = []
        for t in texts:
            if t in out:
                continue
            hit = self._text_cache.get(t)
            if hit is not None:
                self._text_cache.move_to_end(t)
                out[t] = hit
            else:
                out[t] = np.empty(0, np.float32)
                todo.append(t)
        if todo:
            loop = asyncio.get_running_loop()
            try:
                vecs = await loop.run_in_executor(self._executor, self._encode_now, todo)  # T × D
            except PrimeError:
                raise
            except Exception as exc:
                raise EncoderError(f"encoder {self.encoder.name!r} failed: {exc!r}") from exc
            if vecs.shape != (len(todo), self.dim):
                raise EncoderError(f"encoder {self.encoder.name!r} returned {vecs.shape} for {len(todo)} texts")
            for t, v in zip(todo, vecs, strict=True):
                out[t] = v
                if self._text_cache_size and np.isfinite(v).all():
                    self._text_cache[t] = v
                    if len(self._text_cache) > self._text_cache_size:
                        self._text_cache.popitem(last=False)
        return out

    def _predict_now(
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

    async def _predict(self, ctxs: list[FloatArray], queries: FloatArray
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
                self._executor, self._predict_now, padded, queries, None if mask.all() else mask
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

    async def _expand(
        self, reqs: Sequence[_Request], live: list[int], ctxs: list[FloatArray], queries: FloatArray
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

    async def _keep_in_filter(self, reqs: Sequence[_Request], live: list[int], cands: list[list[str]]) -> None:
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

    async def _search_rows(
        self, mat: FloatArray, k: int, filters: list[Any], excl: list[list[str]]
    ) -> list[list[ScoredDoc] | BaseException]:
        """One ``search_batch`` for the rows of ``mat`` (S × O); per row, its hits or its error.

        A store that stays down fails every row. A permanent refusal (a :class:`StoreError`, e.g.
        one request's filter the backend cannot run) is retried row by row, so it reaches only the
        caller whose request caused it.
        """
        async def batch(rows: slice) -> list[list[ScoredDoc]]:
            found = await call_store(
                self.store.name, "search_batch",
                lambda: self.store.search_batch(mat[rows], k, filters=filters[rows], exclude_ids=excl[rows]),
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

    def _depth(self, k: int) -> int:
        """Hits to fetch for a search of ``k``: the score confidence reads the first two."""
        return max(k, 2) if self.score_confidence is not None else k

    def _confidence(self, docs: Sequence[ScoredDoc], head: float) -> float:
        """The search's confidence: from its hits' scores (best first) if calibrated, else the head's ``head``."""
        if self.score_confidence is None:
            return head
        try:
            return self.score_confidence.probability([d.score for d in docs])
        except ValueError:  # a store gave a non-finite score: no evidence either way
            return 0.0

    async def _process_batch(self, reqs: Sequence[_Request]) -> list[_Outcome | BaseException]:
        results: list[_Outcome | BaseException | None] = [None] * len(reqs)
        # 1. encode every text of the batch at once
        texts = [t for r in reqs for t in ((r.context_texts or []) + ([r.query_text] if r.query_text else []))]
        try:
            emb = await self._encode(texts) if texts else {}
        except Exception as exc:
            return [exc] * len(reqs)
        ctxs: list[FloatArray] = []
        queries = np.zeros((len(reqs), self.dim), np.float32)  # B × D
        for i, r in enumerate(reqs):
            turns = r.context_vecs if r.context_vecs is not None else np.stack([emb[t] for t in r.context_texts or []])
            ctxs.append(turns)  # N_i × D
            queries[i] = r.query_vec if r.query_vec is not None else emb[r.query_text or ""]
        bad = ~np.isfinite(queries).all(axis=1) | np.array([not np.isfinite(c).all() for c in ctxs])
        for i in np.flatnonzero(bad).tolist():
            results[i] = EncoderError(f"encoder {self.encoder.name!r} produced a non-finite embedding")
        live = [i for i in range(len(reqs)) if results[i] is None]
        if live and self.expansion is not None:
            try:
                ctxs = await self._expand(reqs, live, ctxs, queries)
            except StoreError as exc:  # permanent: maybe one request's filter; find whose, alone
                if len(live) == 1:
                    results[live[0]] = exc
                else:
                    for i in live:
                        try:
                            ctxs = await self._expand(reqs, [i], ctxs, queries)
                        except Exception as one:
                            results[i] = one
            except Exception as exc:  # the store is down: every caller of the batch gets it
                for i in live:
                    results[i] = exc
            live = [i for i in live if results[i] is None]
        if not live:
            return [r for r in results if r is not None]
        # 2. one predictor forward
        pred, conf = await self._predict([ctxs[i] for i in live], queries[live])
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
        # 3. the PREPARE cache
        to_search: list[int] = []
        for i in live:
            r = reqs[i]
            vec, cf, src = vectors[i]
            if src == "fallback":
                self.fallbacks += 1
            if r.kind == "search" and r.session_id is not None:
                docs = None if src == "fallback" else self.cache.lookup(
                    r.session_id, vec, self._depth(r.k), r.filter, r.exclude_ids
                )
                if src == "fallback":
                    self.cache.stats.misses += 1
                if docs is not None:
                    results[i] = _Outcome(docs, "cache", self._confidence(docs, cf), vec)
                    continue
            to_search.append(i)
        # 4. one search_batch for the rest
        if to_search:
            k_max = self._depth(max(reqs[i].k for i in to_search))
            mat = np.stack([vectors[i][0] for i in to_search])  # S × O
            filters = [reqs[i].filter for i in to_search]
            excl = [list(reqs[i].exclude_ids) for i in to_search]
            for i, docs_or_exc in zip(to_search, await self._search_rows(mat, k_max, filters, excl), strict=True):
                if isinstance(docs_or_exc, BaseException):
                    results[i] = docs_or_exc
                else:
                    vec, cf, src = vectors[i]
                    score_conf = cf if src == "fallback" else self._confidence(docs_or_exc, cf)
                    results[i] = _Outcome(docs_or_exc, src, score_conf, vec)
        out: list[_Outcome | BaseException] = []
        for res in results:
            assert res is not None
            out.append(res)
        return out
