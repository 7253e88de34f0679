"""``PredictiveRetriever.predict_vector`` is the vector ``search`` sends: real MiniLM, Qdrant local mode,
a random predictor with link expansion."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from qdrant_client import models

from prime_retriever.backends.inference import EagerPredictor
from prime_retriever.errors import PredictorError
from prime_retriever.model.random_predictor import random_predictor
from prime_retriever.retrieval.link_graph import LinkExpansion, LinkGraph
from prime_retriever.retrieval.retriever import PredictiveRetriever
from prime_retriever.stores.qdrant import QdrantStore
from prime_retriever.text.documents import Document
from prime_retriever.text.encoders import HFTextEncoder, TextEncoder

DOCS = [
    Document("demon", "Demon Dice is a collectible dice game created by Lester Smith.", "Demon Dice", scope="a"),
    Document("smith", "Lester Smith designed Dragon Dice for TSR.", "Lester Smith", scope="b"),
    Document("dragon", "Dragon Dice is a dice game published by TSR in 1995.", "Dragon Dice", scope="a"),
    Document("tsr", "TSR was an American game publisher, of Dungeons and Dragons fame.", "TSR", scope="b"),
    Document("chess", "Chess is a board game for two players.", "Chess", scope="a"),
]
CONTEXT = ["user: I played Demon Dice yesterday.", "assistant: What would you like to know?"]
QUERY = "Who designed it?"


class _NaNBackend(EagerPredictor):
    """A predictor whose every output is NaN: search falls back to the query embedding."""

    def predict(self, *args: Any, **kwargs: Any) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        emb, conf = super().predict(*args, **kwargs)
        return np.full_like(emb, np.nan), conf


def _retriever(minilm: TextEncoder, *, expand: bool = True, nan: bool = False) -> PredictiveRetriever:
    model = random_predictor(minilm.dim, seed=1, perturb=0.05, link_candidates=2, max_context_length=6)
    expansion = LinkExpansion.for_config(model.config, LinkGraph.build(DOCS)) if expand else None
    backend = _NaNBackend(model) if nan else EagerPredictor(model)
    return PredictiveRetriever(backend, minilm, QdrantStore("docs", location=":memory:"), expansion=expansion)


@pytest.fixture
async def retriever(minilm: HFTextEncoder) -> AsyncIterator[PredictiveRetriever]:
    async with _retriever(minilm) as rt:
        await rt.index(DOCS, progress=False)
        yield rt


async def _scores_of(rt: PredictiveRetriever, vector: npt.NDArray[np.float32], ids: list[str]) -> list[float]:
    stored = await rt.store.get_vectors(ids)
    return [float(stored[i] @ vector / (np.linalg.norm(stored[i]) * np.linalg.norm(vector))) for i in ids]


@pytest.mark.parametrize("scope", [None, "a"])
async def test_search_scores_are_cosines_to_the_predicted_vector(retriever: PredictiveRetriever,
                                                                 scope: str | None) -> None:
    flt = None if scope is None else models.Filter(
        must=[models.FieldCondition(key="scope", match=models.MatchValue(value=scope))])
    vector = await retriever.predict_vector(CONTEXT, QUERY, filter=flt)
    hits = await retriever.search(CONTEXT, QUERY, k=len(DOCS), filter=flt)
    assert hits.source == "predicted" and vector.shape == (retriever.dim,)
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5
    np.testing.assert_allclose(await _scores_of(retriever, vector, hits.doc_ids), [h.score for h in hits], atol=1e-5)
    # the prediction is neither the raw query embedding nor the prediction without its linked documents
    q = np.asarray(retriever.encoder.encode([QUERY]), dtype=np.float32)[0]
    assert float(vector @ q / np.linalg.norm(q)) < 0.9999
    async with _retriever(retriever.encoder, expand=False) as plain:
        await plain.index(DOCS, progress=False)
        assert not np.allclose(await plain.predict_vector(CONTEXT, QUERY, filter=flt), vector, atol=1e-4)


async def test_exclude_ids_reach_link_expansion(retriever: PredictiveRetriever) -> None:
    vector = await retriever.predict_vector(CONTEXT, QUERY, exclude_ids=["demon"])
    hits = await retriever.search(CONTEXT, QUERY, k=4, exclude_ids=["demon"])
    assert "demon" not in hits.doc_ids
    np.testing.assert_allclose(await _scores_of(retriever, vector, hits.doc_ids), [h.score for h in hits], atol=1e-5)


async def test_invalid_input_is_refused(retriever: PredictiveRetriever) -> None:
    with pytest.raises(PredictorError):
        await retriever.predict_vector([], QUERY)
    with pytest.raises(PredictorError):
        await retriever.predict_vector(CONTEXT, "  ")
    with pytest.raises(PredictorError):
        await retriever.predict_vector(CONTEXT, QUERY, filter={"scope": "a"})


async def test_a_failed_prediction_gives_the_query_embedding(minilm: HFTextEncoder) -> None:
    async with _retriever(minilm, nan=True) as rt:
        await rt.index(DOCS, progress=False)
        vector = await rt.predict_vector(CONTEXT, QUERY)
        hits = await rt.search(CONTEXT, QUERY, k=3)
        assert hits.source == "fallback"
        q = np.asarray(minilm.encode([QUERY]), dtype=np.float32)[0]
        np.testing.assert_allclose(vector, q / np.linalg.norm(q), atol=1e-6)
        np.testing.assert_allclose(await _scores_of(rt, vector, hits.doc_ids), [h.score for h in hits], atol=1e-5)


async def test_concurrent_calls_share_micro_batches_with_searches_and_match_sequential_ones(
    retriever: PredictiveRetriever
) -> None:
    import asyncio

    queries = [QUERY, "Who published Dragon Dice?", "What is chess?", "Which games did TSR publish?"]
    alone = [await retriever.predict_vector(CONTEXT, q) for q in queries]
    before = retriever.batch_stats.batches
    vectors_task = asyncio.gather(*(retriever.predict_vector(CONTEXT, q) for q in queries))
    hits_task = asyncio.gather(*(retriever.search(CONTEXT, q, k=3) for q in queries))
    vectors, results = await vectors_task, await hits_task  # both gathers were scheduled before either ran
    assert retriever.batch_stats.batches - before < len(queries) * 2  # grouped, not one batch each
    for a, t in zip(alone, vectors, strict=True):
        np.testing.assert_allclose(t, a, atol=1e-5)
    for vector, hits in zip(vectors, results, strict=True):
        np.testing.assert_allclose(await _scores_of(retriever, vector, hits.doc_ids), [h.score for h in hits],
                                   atol=1e-5)
