"""PredictiveRetriever(hybrid=True): the predicted vector and the query's BM25 vector, fused in the store.

Real MiniLM, Qdrant's BM25, Qdrant local mode and Qdrant Edge over 200 HotpotQA paragraphs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from prime_retriever.errors import StoreError
from prime_retriever.retrieval.retriever import PredictiveRetriever
from prime_retriever.stores.base import VectorStore
from prime_retriever.stores.edge import EdgeStore
from prime_retriever.stores.qdrant import QdrantStore
from prime_retriever.text.bm25 import Bm25Encoder
from tests.prime_retriever.retrieval.test_retriever import cached_encoder, hotpot_sample, small_predictor

K = 5


def make_store(kind: str, tmp_path: Path) -> VectorStore:
    return QdrantStore("docs", location=":memory:") if kind == "local" else EdgeStore(tmp_path / "shard")


@pytest.fixture(params=["local", "edge"])
async def hybrid(request: pytest.FixtureRequest, cache_root: Path, tmp_path: Path
                 ) -> AsyncIterator[PredictiveRetriever]:
    r = PredictiveRetriever(small_predictor(), cached_encoder(cache_root), make_store(request.param, tmp_path),
                            hybrid=True)
    await r.index(hotpot_sample().docs, progress=False)
    yield r
    await r.close()


async def test_search_sends_the_prediction_and_the_query_words(hybrid: PredictiveRetriever) -> None:
    sample = hotpot_sample()
    bm25 = Bm25Encoder()
    changed = 0
    for q in sample.questions[:12]:
        ctx = ["user: I am reading about films and the people in them."]
        res = await hybrid.search(ctx, q, k=K)
        vec = await hybrid.predict_vector(ctx, q)
        want = await hybrid.store.search(vec, K, sparse=bm25.embed_query(q))
        assert res.doc_ids == [d.doc_id for d in want]
        assert res.source == "predicted"
        dense = await hybrid.store.search(vec, K)
        changed += res.doc_ids != [d.doc_id for d in dense]
    assert changed >= 6  # the BM25 half moves most rankings


async def test_hybrid_finds_more_gold_than_dense(hybrid: PredictiveRetriever) -> None:
    """On these questions the words help: hybrid recall@5 of the gold paragraphs is above dense's."""
    sample = hotpot_sample()
    found = {"dense": 0, "hybrid": 0}
    for q, gold in zip(sample.questions, sample.gold, strict=True):
        vec = await hybrid.predict_vector([q], q)
        dense = {d.doc_id for d in await hybrid.store.search(vec, K)}
        fused = set((await hybrid.search([q], q, k=K)).doc_ids)
        found["dense"] += len(dense & set(gold))
        found["hybrid"] += len(fused & set(gold))
    assert found["hybrid"] > found["dense"], found


async def test_a_prepared_session_is_still_searched_hybrid(hybrid: PredictiveRetriever) -> None:
    q = hotpot_sample().questions[0]
    ctx = ["user: tell me about an actress", "assistant: which one?"]
    await hybrid.prepare("s1", ctx)
    res = await hybrid.search(ctx, q, k=K, session_id="s1")
    assert res.source == "predicted"  # PREPARE did not know the query's words: not served from the cache
    assert hybrid.cache.stats.hits == 0


async def test_concurrent_text_and_vector_queries(hybrid: PredictiveRetriever, cache_root: Path) -> None:
    sample = hotpot_sample()
    qvec = cached_encoder(cache_root).encode([sample.questions[1]], show_progress=False)[0]
    alone = [await hybrid.search([q], q, k=K) for q in sample.questions[:6]]
    alone_vec = await hybrid.search([sample.questions[1]], qvec, k=K)  # a vector query: dense, no words
    together = await asyncio.gather(*(hybrid.search([q], q, k=K) for q in sample.questions[:6]),
                                    hybrid.search([sample.questions[1]], qvec, k=K))
    assert [r.doc_ids for r in together] == [r.doc_ids for r in [*alone, alone_vec]]
    for a, b in zip(together, [*alone, alone_vec], strict=True):  # a batched forward may differ in the last bits
        np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=1e-5)
    assert hybrid.batch_stats.max_batch > 1


@pytest.mark.parametrize("kind", ["local", "edge"])
async def test_a_dense_collection_is_not_opened_hybrid(kind: str, cache_root: Path, tmp_path: Path) -> None:
    store = make_store(kind, tmp_path)
    async with PredictiveRetriever(small_predictor(), cached_encoder(cache_root), store, owns_store=False) as dense:
        await dense.index(hotpot_sample().docs[:20], progress=False)
    async with PredictiveRetriever(small_predictor(), cached_encoder(cache_root), store, hybrid=True) as r:
        with pytest.raises(StoreError, match="holds no BM25 vectors"):
            await r.search(["hello"], "a question", k=K)
        assert await store.count() == 20  # nothing lost
