"""Faults and bad input: none may lose or mix up a result.

Real MiniLM, real Qdrant local mode and an eager predictor; the only stand-ins are injected
failing objects (a store that raises, hangs or counts its calls around the real one, and a
predictor backend that raises or returns NaN) and a closed port on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from qdrant_client import models

from prime_retriever.backends.factory import make_backend
from prime_retriever.backends.inference import EagerPredictor
from prime_retriever.errors import EncoderError, PredictorError, RetrieverError, StoreError
from prime_retriever.retrieval.link_graph import LinkExpansion, LinkGraph
from prime_retriever.retrieval.results import SearchResult
from prime_retriever.retrieval.retriever import PredictiveRetriever
from prime_retriever.stores.base import ScoredDoc, StoreUnavailableError, point_id
from prime_retriever.stores.edge import EdgeStore
from prime_retriever.stores.open import open_store
from prime_retriever.stores.qdrant import QdrantStore
from prime_retriever.stores.retry import RetryPolicy
from prime_retriever.text.embedding_cache import CachedEncoder
from tests.prime_retriever.retrieval.test_retriever import (
    assert_same_hits,
    encode_cached,
    hotpot_sample,
    populated_store,
    shared_encoder,
    small_predictor,
)

FAST_RETRY = RetryPolicy(attempts=3, base_delay_s=0.001, max_delay_s=0.01, timeout_s=0.5)


class WrappedStore:
    """A VectorStore around a real one that can fail, hang or count calls (injected faults)."""

    def __init__(
        self, inner: QdrantStore, *, fail_first: int = 0, exc: BaseException | None = None, hang: bool = False
    ) -> None:
        self.inner = inner
        self.name = f"wrapped({inner.name})"
        self.fail_first = fail_first
        self.exc = exc or StoreUnavailableError("connection refused")
        self.hang = hang
        self.calls: list[str] = []
        self.gate: asyncio.Event | None = None

    async def _maybe_fail(self, what: str) -> None:
        self.calls.append(what)
        if self.gate is not None:
            await self.gate.wait()
        if self.hang:
            await asyncio.Event().wait()
        if self.fail_first > 0:
            self.fail_first -= 1
            raise self.exc

    async def ensure_collection(self, dim: int, encoder_name: str, *, sparse: bool = False) -> None:
        self.calls.append("ensure_collection")
        await self.inner.ensure_collection(dim, encoder_name, sparse=sparse)

    async def upsert(self, ids: Sequence[str], vectors: npt.ArrayLike, payloads: Sequence[Mapping[str, Any]], *,
                     sparse: Any = None) -> None:
        await self._maybe_fail("upsert")
        await self.inner.upsert(ids, vectors, payloads, sparse=sparse)

    async def search(
        self, vector: npt.ArrayLike, k: int, filter: Any = None, exclude_ids: Sequence[str] = (), *, sparse: Any = None
    ) -> list[ScoredDoc]:
        await self._maybe_fail("search")
        return await self.inner.search(vector, k, filter, exclude_ids, sparse=sparse)

    async def search_batch(
        self, vectors: npt.ArrayLike, k: int, filters: Any = None, exclude_ids: Any = None, *, sparse: Any = None
    ) -> list[list[ScoredDoc]]:
        await self._maybe_fail("search_batch")
        return await self.inner.search_batch(vectors, k, filters, exclude_ids, sparse=sparse)

    async def count(self) -> int:
        return await self.inner.count()

    async def existing_ids(self, ids: Sequence[str]) -> set[str]:
        return await self.inner.existing_ids(ids)

    async def get_vectors(self, ids: Sequence[str]) -> dict[str, npt.NDArray[np.float32]]:
        return await self.inner.get_vectors(ids)

    async def close(self) -> None:
        self.calls.append("close")
        await self.inner.close()

    async def __aenter__(self) -> WrappedStore:
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()


class FailingBackend:
    """A PredictorBackend that raises, or returns NaN embeddings for chosen rows."""

    name = "failing"

    def __init__(self, inner: EagerPredictor, *, raise_exc: bool = True, nan_rows: Sequence[int] = ()) -> None:
        self.inner = inner
        self.raise_exc = raise_exc
        self.nan_rows = list(nan_rows)

    @property
    def input_dim(self) -> int:
        return self.inner.input_dim

    @property
    def output_dim(self) -> int:
        return self.inner.output_dim

    @property
    def max_context_length(self) -> int:
        return self.inner.max_context_length

    def predict(
        self, context: np.ndarray, query: np.ndarray, context_mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.raise_exc:
            raise RuntimeError("CUDA error: device-side assert triggered (injected)")
        emb, conf = self.inner.predict(context, query, context_mask)
        emb[[r for r in self.nan_rows if r < len(emb)]] = np.nan
        return emb, conf

    def warmup(self) -> None:
        pass


async def _retriever(cache_root: Path, **kw: Any) -> tuple[PredictiveRetriever, WrappedStore]:
    store_kw = {k: kw.pop(k) for k in ("fail_first", "exc", "hang") if k in kw}
    store = WrappedStore(await populated_store(cache_root), **store_kw)
    backend = kw.pop("backend", None) or small_predictor()
    return PredictiveRetriever(backend, shared_encoder(), store, retry=kw.pop("retry", FAST_RETRY), **kw), store


# ---------------------------------------------------------------------------------------- store faults


async def test_transient_store_errors_are_retried_and_results_are_correct(cache_root: Path) -> None:
    q = hotpot_sample().questions[0]
    ref, _ = await _retriever(cache_root)
    async with ref:
        expected = await ref.search([q], q, k=5)
    r, store = await _retriever(cache_root, fail_first=2)
    async with r:
        got = await r.search([q], q, k=5)
    assert store.calls.count("search_batch") == 3
    assert_same_hits(got, expected)


async def test_store_that_keeps_failing_raises_retriever_error_naming_it(cache_root: Path) -> None:
    q = hotpot_sample().questions[0]
    r, store = await _retriever(cache_root, fail_first=10**6, exc=RuntimeError("boom"))
    async with r:
        with pytest.raises(RetrieverError, match=r"wrapped\(qdrant-local.*3 attempt"):
            await r.search([q], q, k=5)
    assert store.calls.count("search_batch") == 3


async def test_hanging_store_is_bounded_by_the_per_call_timeout(cache_root: Path) -> None:
    q = hotpot_sample().questions[0]
    retry = RetryPolicy(attempts=2, base_delay_s=0.001, timeout_s=0.05)
    r, store = await _retriever(cache_root, hang=True, retry=retry)
    async with r:
        with pytest.raises(RetrieverError, match="no answer within"):
            await r.search([q], q, k=5)
    assert store.calls.count("search_batch") == 2


async def test_permanent_store_error_is_not_retried(cache_root: Path) -> None:
    q = hotpot_sample().questions[0]
    r, store = await _retriever(cache_root, fail_first=10, exc=StoreError("unsupported filter"))
    async with r:
        with pytest.raises(StoreError, match="unsupported filter"):
            await r.search([q], q, k=5)
    assert store.calls.count("search_batch") == 1


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block exits: nothing listens


async def test_unreachable_qdrant_server_raises_retriever_error() -> None:
    store = QdrantStore("docs", url=f"http://127.0.0.1:{_closed_port()}", timeout=2)
    r = PredictiveRetriever(small_predictor(), shared_encoder(), store, retry=FAST_RETRY)
    async with r:
        with pytest.raises(RetrieverError, match=r"qdrant-server\(http://127\.0\.0\.1"):
            await r.search(["hello"], "hello", k=3)


async def test_a_store_failure_reaches_every_caller_of_the_batch_and_nobody_else(cache_root: Path) -> None:
    qs = hotpot_sample().questions[:5]
    r, _ = await _retriever(cache_root, fail_first=3, batch_wait_s=0.02)
    async with r:
        results = await asyncio.gather(*(r.search([q], q, k=3) for q in qs), return_exceptions=True)
        assert all(isinstance(x, RetrieverError) for x in results)
        again = await asyncio.gather(*(r.search([q], q, k=3) for q in qs))  # the store is back
        assert all(len(x) == 3 and x.source == "predicted" for x in again)


async def test_a_request_the_store_refuses_fails_alone_in_its_batch(tmp_path: Path, cache_root: Path) -> None:
    """Qdrant Edge cannot run a ``min_should`` filter (a permanent StoreError): the caller who sent
    one gets that error, and the others batched with it still get their own hits."""
    sample = hotpot_sample()
    qs = sample.questions[:4]
    vectors = encode_cached(cache_root, [d.encoding_text for d in sample.docs])  # N × D
    refused = models.Filter(min_should=models.MinShould(
        conditions=[models.HasIdCondition(has_id=[point_id(sample.docs[0].id)])], min_count=1))
    async with EdgeStore(tmp_path / "shard") as store:
        await store.ensure_collection(shared_encoder().dim, shared_encoder().name)
        await store.upsert([d.id for d in sample.docs], vectors, [d.payload() for d in sample.docs])
        async with PredictiveRetriever(small_predictor(), shared_encoder(), store, micro_batching=False,
                                       owns_store=False) as ref:
            expected = [await ref.search([q], q, k=4) for q in qs]
        for expansion in (None, LinkExpansion(LinkGraph.build(sample.docs), seeds=1, max_candidates=3)):
            r = PredictiveRetriever(small_predictor(), shared_encoder(), store, retry=FAST_RETRY, owns_store=False,
                                    max_batch_size=4, batch_wait_s=1.0, expansion=expansion)
            got = await asyncio.gather(
                *(r.search([q], q, k=4, filter=refused if i == 2 else None) for i, q in enumerate(qs)),
                return_exceptions=True,
            )
            assert r.batch_stats.batches == 1, got
            assert isinstance(got[2], StoreError) and "min_should" in str(got[2])
            for i in (0, 1, 3):
                res = got[i]
                assert isinstance(res, SearchResult), res
                if expansion is None:
                    assert_same_hits(res, expected[i])
                else:
                    assert len(res) == 4 and res.source == "predicted"
            await r.close()


# ---------------------------------------------------------------------------------------- predictor faults


async def test_predictor_exception_falls_back_to_query_embedding(
    cache_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    qs = hotpot_sample().questions[:4]
    backend = FailingBackend(small_predictor(), raise_exc=True)
    r, _ = await _retriever(cache_root, backend=backend)
    async with r:
        with caplog.at_level(logging.WARNING, logger="prime_retriever.retrieval.retriever"):
            got = await asyncio.gather(*(r.search(["some context", q], q, k=5) for q in qs))
        base = [await r.search_baseline(q, k=5) for q in qs]
        assert r.fallbacks == 4
    assert "falling back" in caplog.text
    for g, b in zip(got, base, strict=True):
        assert g.source == "fallback" and all(h.source == "fallback" for h in g) and g.confidence == 0.0
        assert_same_hits(g, b, tol=1e-3)


async def test_non_finite_prediction_falls_back_for_that_row_only(cache_root: Path) -> None:
    sample = hotpot_sample()
    vecs = shared_encoder().encode(sample.questions[:3])  # 3 × D
    backend = FailingBackend(small_predictor(), raise_exc=False, nan_rows=[1])
    r, _ = await _retriever(cache_root, backend=backend, micro_batching=False)
    async with r:
        # alone, every request is row 0 of its batch: none is NaN
        for v in vecs:
            assert (await r.search(v[None], v, k=3)).source == "predicted"
    r, _ = await _retriever(cache_root, backend=backend, max_batch_size=3, batch_wait_s=1.0)
    async with r:
        got = await asyncio.gather(*(r.search(v[None], v, k=3) for v in vecs))
    assert [g.source for g in got] == ["predicted", "fallback", "predicted"]
    assert all(len(g) == 3 for g in got)


# ---------------------------------------------------------------------------------------- cancellation


async def test_cancelling_callers_mid_batch_leaves_the_others_intact(cache_root: Path) -> None:
    qs = hotpot_sample().questions[:10]
    ref, _ = await _retriever(cache_root, micro_batching=False)
    async with ref:
        expected = [await ref.search([q], q, k=4) for q in qs]
    r, store = await _retriever(cache_root, batch_wait_s=0.01)
    store.gate = asyncio.Event()  # the batch stops inside search_batch until the gate opens
    async with r:
        tasks = [asyncio.create_task(r.search([q], q, k=4)) for q in qs]
        while "search_batch" not in store.calls:
            await asyncio.sleep(0.005)
        for i in (0, 4, 9):
            tasks[i].cancel()
        await asyncio.sleep(0.01)
        store.gate.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert r.batch_stats.batches == 1
    for i, (res, exp) in enumerate(zip(results, expected, strict=True)):
        if i in (0, 4, 9):
            assert isinstance(res, asyncio.CancelledError)
        else:
            assert not isinstance(res, BaseException)
            assert_same_hits(res, exp)


# ---------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("context", "query", "k", "match"),
    [
        ([], "q", 5, "empty context"),
        ("", "q", 5, "empty context turn"),
        (["ok", "  "], "q", 5, "empty context turn"),
        (["ok"], "", 5, "empty query"),
        (["ok"], "   ", 5, "empty query"),
        (["ok"], "q", 0, "k must be"),
        (["ok"], "q", -3, "k must be"),
        (["ok"], "q", True, "k must be"),
        (["ok"], "q", 2.5, "k must be"),
        (["ok"], "q", 2**64, r"k must be an integer in \[1, 100000\]"),
        (["ok"], None, 5, "query is required"),
        (np.full((2, 384), np.nan, np.float32), "q", 5, "NaN or Inf"),
        (["ok"], np.full(384, np.inf, np.float32), 5, "NaN or Inf"),
        (np.ones((2, 100), np.float32), "q", 5, "last dimension 384"),
        (["ok"], np.ones(100, np.float32), 5, "last dimension 384"),
        (np.zeros((0, 384), np.float32), "q", 5, "empty context"),
        (["ok"], np.zeros(384, np.float32), 5, "all-zero"),
        (["ok", np.ones(384, np.float32)], "q", 5, "all texts or all embeddings"),
        (42, "q", 5, "context must be"),
        (["ok"], 42, 5, "query must be"),
        (np.ones((1, 2, 384), np.float32), "q", 5, r"shape \(N, 384\)"),
        (["ok"], np.ones((2, 384), np.float32), 5, r"shape \(384,\)"),
    ],
)
async def test_invalid_input_is_rejected_before_any_io(
    cache_root: Path, context: Any, query: Any, k: Any, match: str
) -> None:
    r, store = await _retriever(cache_root)
    async with r:
        with pytest.raises(PredictorError, match=match) as info:
            await r.search(context, query, k=k)
        assert isinstance(info.value, ValueError)
        assert store.calls == []  # not even ensure_collection
        assert r.batch_stats.batches == 0


async def test_a_baseline_search_needs_a_query(cache_root: Path) -> None:
    r, store = await _retriever(cache_root)
    async with r:
        for bad in (None, "", np.full(384, np.nan, np.float32)):
            with pytest.raises(PredictorError):
                await r.search_baseline(bad)  # type: ignore[arg-type]
        assert store.calls == []


async def test_invalid_session_and_exclude_ids(cache_root: Path) -> None:
    r, store = await _retriever(cache_root)
    async with r:
        with pytest.raises(PredictorError, match="session_id"):
            await r.search(["a"], "a", session_id="")
        with pytest.raises(PredictorError, match="exclude_ids"):
            await r.search(["a"], "a", exclude_ids="doc")  # a bare str is not a list of ids
        with pytest.raises(PredictorError, match="session_id"):
            await r.prepare("", ["a"])
        with pytest.raises(PredictorError, match="exclude_ids"):
            await r.search(["a"], "a", exclude_ids=None)  # type: ignore[arg-type]
        with pytest.raises(PredictorError, match=r"filter must be a qdrant_client\.models\.Filter"):
            await r.search(["a"], "a", filter={"must": []})
    assert store.calls == ["close"]


async def test_exclude_ids_may_be_any_iterable(cache_root: Path) -> None:
    q = hotpot_sample().questions[0]
    r, _ = await _retriever(cache_root)
    async with r:
        top = (await r.search([q], q, k=1))[0].doc_id
        for excl in ([top], (x for x in [top]), {top}):
            hits = await r.search([q], q, k=5, exclude_ids=excl)
            assert top not in [h.doc_id for h in hits] and len(hits) == 5


class FailingEncoder:
    """The real encoder, wrapped to fail (an injected fault): it raises, or returns one row too many."""

    def __init__(self, mode: str) -> None:
        self.inner = shared_encoder()
        self.name, self.dim, self.mode = self.inner.name, self.inner.dim, mode

    def encode(self, texts: Sequence[str], batch_size: int = 64,
               show_progress: bool | None = None) -> npt.NDArray[np.float32]:
        if self.mode == "raise":
            raise RuntimeError("tokenizer crashed")
        v = self.inner.encode(list(texts), batch_size=batch_size, show_progress=False)  # n × D
        return np.vstack([v, v[:1]])  # n + 1 rows


@pytest.mark.parametrize(
    ("mode", "match"), [("raise", "failed: RuntimeError"), ("rows", r"returned shape \(2, 384\) for 1 texts")]
)
async def test_an_encoder_failure_is_an_encoder_error_and_searches_nothing(
    cache_root: Path, mode: str, match: str
) -> None:
    store = WrappedStore(await populated_store(cache_root))
    r = PredictiveRetriever(small_predictor(), FailingEncoder(mode), store, retry=FAST_RETRY)
    async with r:
        with pytest.raises(EncoderError, match=match) as info:
            await r.search(["the same text"], "the same text", k=3)
        assert repr(shared_encoder().name) in str(info.value)
        if mode == "raise":
            assert isinstance(info.value.__cause__, RuntimeError)
        assert "search_batch" not in store.calls and "search" not in store.calls
        # nothing half-encoded was cached: a working encoder then serves the same text
        memory = r._pipeline.text_encoder
        assert isinstance(memory, CachedEncoder)
        memory.encoder = shared_encoder()
        assert len(await r.search(["the same text"], "the same text", k=3)) == 3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"prepare_k": 0}, "prepare_k"), ({"text_cache_size": -1}, "text_cache_size")],
)
async def test_retriever_settings_are_checked(cache_root: Path, kwargs: dict[str, Any], match: str) -> None:
    store = await populated_store(cache_root)
    with pytest.raises(ValueError, match=match):
        PredictiveRetriever(small_predictor(), shared_encoder(), store, **kwargs)


def test_an_expansion_that_leaves_no_conversation_turn_is_refused() -> None:
    backend = small_predictor()  # max_context_length 6
    graph = LinkGraph(titles={}, links={})
    with pytest.raises(ValueError, match=r"max_candidates \(6\) must be below the predictor's max_context_length"):
        PredictiveRetriever(backend, shared_encoder(), open_store(":memory:"),
                            expansion=LinkExpansion(graph, max_candidates=6))
    r = PredictiveRetriever(backend, shared_encoder(), open_store(":memory:"),
                            expansion=LinkExpansion(graph, max_candidates=5))
    assert r.max_context_length == 6


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"attempts": 0}, "attempts"), ({"base_delay_s": -1.0}, "delays"), ({"max_delay_s": -1.0}, "delays"),
     ({"timeout_s": 0.0}, "timeout_s")],
)
def test_retry_policy_is_checked(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RetryPolicy(**kwargs)


def test_store_and_backend_specs_are_checked() -> None:
    with pytest.raises(StoreError, match="needs a directory"):
        open_store("edge")
    with pytest.raises(StoreError, match="empty store spec"):
        open_store("")
    with pytest.raises(ValueError, match="unknown predictor backend 'onxx'"):
        make_backend(small_predictor().model, "onxx")
