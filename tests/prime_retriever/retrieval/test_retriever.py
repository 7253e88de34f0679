"""PredictiveRetriever on real components: MiniLM, Qdrant local mode, an eager random-init predictor.

The corpus is a few hundred real HotpotQA paragraphs (``ircot_dev500.jsonl``). Its embeddings
are cached on disk under pytest's cache directory (``.pytest_cache``), so only the first run
pays for encoding them. The helpers here are shared by the other retriever test modules.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from qdrant_client import models

from prime_retriever.backends.inference import EagerPredictor
from prime_retriever.errors import EncoderError
from prime_retriever.model.random_predictor import random_predictor
from prime_retriever.model.score_confidence import ScoreConfidence
from prime_retriever.retrieval.results import Hit, SearchResult
from prime_retriever.retrieval.retriever import PredictiveRetriever
from prime_retriever.stores.qdrant import QdrantStore
from prime_retriever.text.documents import Document
from prime_retriever.text.embedding_cache import CachedEncoder, EmbeddingCache
from prime_retriever.text.encoders import HFTextEncoder
from training.data import data_dir

DATA = data_dir() / "hotpotqa" / "ircot_dev500.jsonl"  # $PRIME_DATA_DIR or ../shared/data
N_DOCS = 200
SCORE_TOL = 1e-4


@dataclass(frozen=True)
class HotpotSample:
    """Unique paragraphs (doc id = title) and questions with their gold paragraph titles."""

    docs: list[Document]
    questions: list[str]
    gold: list[list[str]]


@functools.cache
def hotpot_sample(n_docs: int = N_DOCS) -> HotpotSample:
    """The first ``n_docs`` unique paragraphs of ircot_dev500, and the questions whose gold is among them."""
    if not DATA.exists():
        pytest.skip(f"HotpotQA data not found at {DATA}")
    docs: list[Document] = []
    seen: set[str] = set()
    questions: list[str] = []
    gold: list[list[str]] = []
    with DATA.open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if len(docs) >= n_docs:
                break
            for ctx in row["contexts"]:
                if ctx["title"] not in seen and len(docs) < n_docs:
                    seen.add(ctx["title"])
                    docs.append(Document(id=ctx["title"], text=ctx["paragraph_text"], title=ctx["title"]))
            g = [c["title"] for c in row["contexts"] if c["is_supporting"]]
            if all(t in seen for t in g):
                questions.append(row["question_text"])
                gold.append(g)
    return HotpotSample(docs, questions, gold)


@functools.cache
def shared_encoder() -> HFTextEncoder:
    """The real MiniLM encoder, loaded once per test process."""
    return HFTextEncoder()


def cached_encoder(root: Path) -> CachedEncoder:
    return CachedEncoder(shared_encoder(), EmbeddingCache(root))


@functools.cache
def _encoded(root: Path, texts: tuple[str, ...]) -> npt.NDArray[np.float32]:
    return cached_encoder(root).encode(list(texts), batch_size=32, show_progress=False)


def encode_cached(root: Path, texts: Sequence[str]) -> npt.NDArray[np.float32]:
    """Embeddings of ``texts`` (n × D), cached on disk under ``root`` and in memory."""
    return _encoded(root, tuple(texts))


@functools.cache
def _temporary_cache_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="prime_retriever_embeddings_"))


def embedding_cache_dir(config: pytest.Config) -> Path:
    """A persistent embedding-cache folder inside pytest's cache directory (a temporary one
    when the cache plugin is disabled)."""
    cache = getattr(config, "cache", None)
    if cache is None:
        return _temporary_cache_dir()
    return Path(cache.mkdir("prime_retriever_embeddings"))


async def populated_store(root: Path, collection: str = "docs") -> QdrantStore:
    """A Qdrant local-mode (:memory:) store holding the sample corpus."""
    sample = hotpot_sample()
    enc = shared_encoder()
    vectors = encode_cached(root, [d.encoding_text for d in sample.docs])  # N × D
    store = QdrantStore(collection, location=":memory:")
    await store.ensure_collection(enc.dim, enc.name)
    await store.upsert([d.id for d in sample.docs], vectors, [d.payload() for d in sample.docs])
    return store


def small_predictor(dim: int = 384, perturb: float = 0.003) -> EagerPredictor:
    """A small random-init residual predictor that moves away from the query (not the baseline)."""
    return EagerPredictor(random_predictor(dim, perturb=perturb, max_context_length=6))


small_predictor.__test__ = False  # type: ignore[attr-defined]


def assert_same_hits(a: Sequence[Hit], b: Sequence[Hit], tol: float = SCORE_TOL) -> None:
    """Same scores rank by rank (within ``tol``) and the same ids, except where scores tie within ``tol``."""
    assert len(a) == len(b)
    np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=tol)
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if x.doc_id != y.doc_id:
            near = [h.score for j, h in enumerate(a) if j != i]
            assert any(abs(s - x.score) < tol for s in near) or i == len(a) - 1, (i, x, y)


# ---------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def cache_root(pytestconfig: pytest.Config) -> Path:
    return embedding_cache_dir(pytestconfig)


@pytest.fixture
async def retriever(cache_root: Path) -> AsyncIterator[PredictiveRetriever]:
    store = await populated_store(cache_root)
    async with PredictiveRetriever(small_predictor(), shared_encoder(), store, batch_wait_s=0.005) as r:
        yield r


# ---------------------------------------------------------------------------------------- tests


async def test_search_returns_relevant_hits_with_source_and_confidence(retriever: PredictiveRetriever) -> None:
    sample = hotpot_sample()
    q = sample.questions[0]
    res = await retriever.search([q], q, k=5)
    assert isinstance(res, SearchResult) and len(res) == 5
    assert all(isinstance(h, Hit) and h.source == "predicted" for h in res)
    assert res.source == "predicted" and 0.0 <= res.confidence <= 1.0
    scores = [h.score for h in res]
    assert scores == sorted(scores, reverse=True)
    assert {"doc_id", "title", "text"} <= set(res[0].payload)
    assert res[0].payload["doc_id"] == res[0].doc_id
    # a real question: at least one gold paragraph is retrieved among the top 5
    assert set(sample.gold[0]) & set(res.doc_ids)


async def test_baseline_equals_residual_predictor_at_init(cache_root: Path) -> None:
    """A residual predictor at init predicts the query itself: the predicted path == the baseline."""
    store = await populated_store(cache_root)
    sample = hotpot_sample()
    backend = EagerPredictor(random_predictor(384, max_context_length=6))
    async with PredictiveRetriever(backend, shared_encoder(), store) as r:
        for q in sample.questions[:3]:
            pred = await r.search(["earlier turn", q], q, k=5)
            base = await r.search_baseline(q, k=5)
            assert base.source == "baseline"
            assert_same_hits(pred, base)


async def test_inputs_as_texts_or_embeddings_agree(retriever: PredictiveRetriever, cache_root: Path) -> None:
    sample = hotpot_sample()
    ctx = [sample.questions[1], sample.docs[3].encoding_text]
    q = sample.questions[1]
    by_text = await retriever.search(ctx, q, k=5)
    ctx_emb = shared_encoder().encode(ctx)  # N × D
    q_emb = shared_encoder().encode([q])[0]  # D
    by_emb = await retriever.search(ctx_emb, q_emb, k=5)
    mixed = await retriever.search(list(ctx_emb), q, k=5)
    assert_same_hits(by_text, by_emb, tol=1e-3)
    assert_same_hits(by_text, mixed, tol=1e-3)


async def test_context_longer_than_max_keeps_most_recent_turns(retriever: PredictiveRetriever) -> None:
    sample = hotpot_sample()
    turns = [d.encoding_text[:200] for d in sample.docs[:10]]  # 10 turns, max_context_length = 6
    q = sample.questions[2]
    long = await retriever.search(turns, q, k=5)
    recent = await retriever.search(turns[-6:], q, k=5)
    assert_same_hits(long, recent)
    older = await retriever.search(turns[:6], q, k=5)
    assert [h.score for h in older] != pytest.approx([h.score for h in long], abs=1e-6)


async def test_filter_and_exclude_ids_pass_through(retriever: PredictiveRetriever) -> None:
    sample = hotpot_sample()
    q = sample.questions[0]
    top = await retriever.search([q], q, k=5)
    excluded = await retriever.search([q], q, k=5, exclude_ids=[top[0].doc_id])
    assert top[0].doc_id not in excluded.doc_ids
    assert excluded.doc_ids[:4] == top.doc_ids[1:5]
    title = sample.docs[7].id
    flt = models.Filter(must=[models.FieldCondition(key="title", match=models.MatchValue(value=title))])
    only = await retriever.search([q], q, k=5, filter=flt)
    assert only.doc_ids == [title]


async def test_200_concurrent_searches_equal_one_at_a_time(cache_root: Path) -> None:
    """200 concurrent searches (different queries, contexts of 1-4 turns) share batches, and each
    caller gets exactly what the same call returns alone."""
    sample = hotpot_sample()
    doc_vecs = encode_cached(cache_root, [d.encoding_text for d in sample.docs])  # N × D
    rng = random.Random(0)
    calls: list[tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], int]] = []
    for i in range(200):
        n_turns = 1 + i % 4
        ctx = doc_vecs[[rng.randrange(len(sample.docs)) for _ in range(n_turns)]]  # n × D
        calls.append((ctx, doc_vecs[i % len(sample.docs)], 3 + i % 5))
    store = await populated_store(cache_root)
    async with PredictiveRetriever(
        small_predictor(), shared_encoder(), store, max_batch_size=32, batch_wait_s=0.01
    ) as r:
        together = await asyncio.gather(*(r.search(c, q, k=k) for c, q, k in calls))
        stats = r.batch_stats
        assert stats.batches < 200 and stats.max_batch > 1  # batching happened
        alone = [await r.search(c, q, k=k) for c, q, k in calls]
    for (_, _, k), a, b in zip(calls, together, alone, strict=True):
        assert len(a) == k
        assert_same_hits(a, b)


async def test_concurrent_text_searches_equal_one_at_a_time(cache_root: Path) -> None:
    """Text inputs: the batch's single encoder call maps every text back to its own caller."""
    sample = hotpot_sample()
    qs = sample.questions[:16]
    ctxs = [[q, sample.docs[(7 * i) % len(sample.docs)].encoding_text[:300]] for i, q in enumerate(qs)]
    store = await populated_store(cache_root)
    async with PredictiveRetriever(small_predictor(), shared_encoder(), store, batch_wait_s=0.01) as r:
        together = await asyncio.gather(*(r.search(c, q, k=4) for c, q in zip(ctxs, qs, strict=True)))
        assert r.batch_stats.max_batch > 1
    store = await populated_store(cache_root)
    # a fresh retriever without the text LRU, no batching: each call encoded alone
    async with PredictiveRetriever(
        small_predictor(), shared_encoder(), store, micro_batching=False, text_cache_size=0
    ) as r:
        alone = [await r.search(c, q, k=4) for c, q in zip(ctxs, qs, strict=True)]
        assert r.batch_stats.max_batch == 1
    for a, b in zip(together, alone, strict=True):
        assert_same_hits(a, b, tol=1e-3)


async def test_micro_batching_can_be_disabled(cache_root: Path) -> None:
    sample = hotpot_sample()
    store = await populated_store(cache_root)
    async with PredictiveRetriever(small_predictor(), shared_encoder(), store, micro_batching=False) as r:
        res = await asyncio.gather(*(r.search([q], q, k=3) for q in sample.questions[:6]))
        assert r.batch_stats.batches == 6 and r.batch_stats.max_batch == 1
        assert all(len(x) == 3 for x in res)


async def test_warmup_and_from_config(cache_root: Path) -> None:
    enc = shared_encoder()
    with pytest.warns(UserWarning, match="random-init"):
        r = PredictiveRetriever.from_config(store=":memory:", encoder=enc)
    async with r:
        await r.warmup()
        report = await r.index(hotpot_sample().docs[:20], progress=False)
        assert report.indexed == 20 and report.count_after == 20
        q = hotpot_sample().questions[0]
        res = await r.search([q], q, k=3)
        assert len(res) == 3


async def test_score_confidence_reads_the_hits_scores_on_every_path(cache_root: Path, tmp_path: Path) -> None:
    """With a calibration the confidence is that of the search's own top-2 scores: fresh, k=1, prepared, cached."""
    from prime_retriever.model.checkpoint import attach_score_confidence, save_checkpoint

    sc = ScoreConfidence(top_weight=2.0, margin_weight=25.0, bias=-1.0, n_fitted=10, hit_rate=0.5)
    backend = small_predictor()
    q = hotpot_sample().questions[1]
    qv = encode_cached(cache_root, [q])  # 1 × D
    _, head = backend.predict(qv[None], qv)  # the predictor's own confidence head
    store = await populated_store(cache_root)
    async with PredictiveRetriever(backend, shared_encoder(), store, batch_wait_s=0.005, score_confidence=sc) as r:
        five = await r.search([q], q, k=5)
        expected = sc.probability([h.score for h in five])
        assert five.confidence == pytest.approx(expected, abs=1e-6)
        assert abs(expected - float(head[0])) > 1e-3  # the two confidences differ, so the check above can fail
        one = await r.search([q], q, k=1)  # one hit asked for: the second is still read for the margin
        assert len(one) == 1 and one.confidence == pytest.approx(expected, abs=1e-6)
        prepared = await r.prepare("s", [q], query=q, k=1)
        cached = await r.search([q], q, k=1, session_id="s")
        assert len(prepared) == 1 and prepared.confidence == pytest.approx(expected, abs=1e-6)
        assert cached.source == "cache" and len(cached) == 1 and cached.confidence == pytest.approx(expected, abs=1e-6)
        base = await r.search_baseline(q, k=5)
        assert base.confidence == 0.0
    store = await populated_store(cache_root)
    async with PredictiveRetriever(backend, shared_encoder(), store, batch_wait_s=0.005) as r:
        plain = await r.search([q], q, k=5)  # no calibration: the head's confidence, as before
        assert plain.confidence == pytest.approx(float(head[0]), abs=1e-6)
    # from_config takes the checkpoint's calibration
    save_checkpoint(backend.model, tmp_path / "ck")
    attach_score_confidence(tmp_path / "ck", sc)
    async with PredictiveRetriever.from_config(tmp_path / "ck", encoder=shared_encoder()) as r:
        assert r.score_confidence == sc


async def test_dimension_mismatch_is_refused() -> None:
    enc = shared_encoder()
    store = QdrantStore("docs", location=":memory:")
    with pytest.raises(EncoderError, match="384"):
        PredictiveRetriever(EagerPredictor(random_predictor(48)), enc, store)
    await store.close()


async def test_close_releases_threads_and_store(cache_root: Path) -> None:
    store = await populated_store(cache_root)
    r = PredictiveRetriever(small_predictor(), shared_encoder(), store)
    q = hotpot_sample().questions[0]
    await r.search([q], q, k=2)
    await r.close()
    assert r._executor._shutdown
    assert store._closed
    from prime_retriever.errors import RetrieverError

    with pytest.raises(RetrieverError, match="closed"):
        await r.search([q], q, k=2)
    await r.close()  # idempotent
