"""Issue 30: one bad request never fails the others; query vectors of any finite norm give the unit vector's hits.

Real MiniLM, Qdrant local mode and qdrant-edge, an eager random-init predictor. The pipeline test
builds its :class:`Request` by hand (bypassing the validator) to reach the encoder with a text the
validator would refuse: the real tokenizer fails on it, and only that request may get the error.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from prime_retriever.errors import EncoderError, PredictorError
from prime_retriever.retrieval.requests import Outcome, Request
from prime_retriever.retrieval.retriever import PredictiveRetriever
from prime_retriever.stores.edge import EdgeStore
from tests.prime_retriever.retrieval.test_retriever import (
    encode_cached,
    hotpot_sample,
    populated_store,
    shared_encoder,
    small_predictor,
)

BAD = "bad \udcff query"  # a lone surrogate: not valid Unicode, the tokenizer cannot encode it


async def test_a_text_that_is_not_unicode_is_refused_at_entry_and_fails_no_other_search(cache_root: Path) -> None:
    sample = hotpot_sample()
    store = await populated_store(cache_root)
    async with PredictiveRetriever(small_predictor(), shared_encoder(), store, batch_wait_s=0.05) as r:
        good = sample.questions[:31]
        calls = [r.search(["user: hello"], q, k=3) for q in good[:15]]
        calls.append(r.search(["user: hello"], BAD, k=3))
        calls += [r.search(["user: hello"], q, k=3) for q in good[15:]]
        out = await asyncio.gather(*calls, return_exceptions=True)
        assert isinstance(out[15], PredictorError) and "Unicode" in str(out[15])
        assert all(not isinstance(o, BaseException) and len(o) == 3 for i, o in enumerate(out) if i != 15), out
        with pytest.raises(PredictorError, match="Unicode"):
            await r.search(["fine", "a \ud800 turn"], "query", k=3)
        with pytest.raises(PredictorError, match="Unicode"):
            await r.prepare("s", ["\udfff"])
        with pytest.raises(PredictorError, match="Unicode"):
            await r.search_baseline(BAD, k=3)


async def test_an_encoder_failure_reaches_only_its_own_request(cache_root: Path) -> None:
    sample = hotpot_sample()
    store = await populated_store(cache_root)
    async with PredictiveRetriever(small_predictor(), shared_encoder(), store) as r:
        await r.warmup()

        def req(query: str) -> Request:
            return Request("search", ["user: hello"], None, query, None, 3, None, (), None)

        reqs = [req(q) for q in sample.questions[:7]]
        reqs.insert(3, req(BAD))
        out = await r._pipeline.process_batch(reqs)
        assert isinstance(out[3], EncoderError)
        alone = [await r._pipeline.process_batch([q]) for q in reqs]
        for i, o in enumerate(out):
            if i != 3:
                assert isinstance(o, Outcome), o
                ref = alone[i][0]
                assert isinstance(ref, Outcome)
                assert [d.doc_id for d in o.docs] == [d.doc_id for d in ref.docs]


@pytest.mark.parametrize("store_kind", ["local", "edge"])
async def test_query_vectors_of_any_finite_norm_give_the_unit_vectors_hits(
    cache_root: Path, tmp_path: Path, store_kind: str
) -> None:
    sample = hotpot_sample()
    if store_kind == "local":
        store = await populated_store(cache_root)
    else:
        enc = shared_encoder()
        edge = EdgeStore(tmp_path / "edge")
        await edge.ensure_collection(enc.dim, enc.name)
        vectors = encode_cached(cache_root, [d.encoding_text for d in sample.docs])
        await edge.upsert([d.id for d in sample.docs], vectors, [d.payload() for d in sample.docs])
        store = edge  # type: ignore[assignment]
    ctx = encode_cached(cache_root, ["user: tell me about a film"])  # 1 × D
    q = encode_cached(cache_root, sample.questions[:1])[0]  # (D,)
    async with PredictiveRetriever(small_predictor(), shared_encoder(), store) as r:
        ref = await r.search(ctx, q, k=5)
        ref_base = await r.search_baseline(q, k=5)
        for scale in (1e-30, 1e-10, 1e10, 1e20, 1e30):
            for scaled_ctx in (ctx, ctx * scale):
                got = await r.search(scaled_ctx, q * scale, k=5)
                assert [h.doc_id for h in got] == [h.doc_id for h in ref], scale
                np.testing.assert_allclose([h.score for h in got], [h.score for h in ref], atol=1e-4)
            base = await r.search_baseline(q * scale, k=5)
            assert [h.doc_id for h in base] == [h.doc_id for h in ref_base], scale
            np.testing.assert_allclose([h.score for h in base], [h.score for h in ref_base], atol=1e-4)
            vec = await r.predict_vector(ctx, q * scale)
            np.testing.assert_allclose(vec, await r.predict_vector(ctx, q), atol=1e-5)


async def test_non_real_and_non_numeric_dtypes_are_refused(cache_root: Path) -> None:
    store = await populated_store(cache_root)
    q = encode_cached(cache_root, ["a question"])[0]
    async with PredictiveRetriever(small_predictor(), shared_encoder(), store) as r:
        for bad in (q.astype(np.complex64), q.astype(np.complex128) + 1j, q.astype(str), q.astype(object) * 1j):
            with pytest.raises(PredictorError, match=r"dtype|numeric"):
                await r.search(["hello"], bad, k=3)
            with pytest.raises(PredictorError, match=r"dtype|numeric"):
                await r.search_baseline(bad, k=3)
            with pytest.raises(PredictorError, match=r"dtype|numeric"):
                await r.search(bad[None, :], "query", k=3)
        with pytest.raises(PredictorError, match=r"dtype|numeric"):
            await r.prepare("s", [q, q.astype(np.complex64)])
