"""The vector a :class:`~prime_retriever.PredictiveRetriever` search would send, without the search.

The embedder components (LlamaIndex's ``QueryBundle.embedding``, Haystack's ``PredictiveQueryEmbedder``)
hand it to the framework's own retriever, so the framework's filters, hybrid search and rerankers run
unchanged. The steps are the retriever's: keep the most recent turns, encode, expand with linked
documents (one seed search with the raw query embedding, then their stored vectors), predict, and
fall back to the query embedding if the prediction is not finite.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from qdrant_client import models

from prime_retriever import PredictiveRetriever, PredictorError
from prime_retriever.stores.base import point_id

__all__ = ["predict_vector"]

FloatArray = npt.NDArray[np.float32]


def _unit(v: FloatArray) -> FloatArray:
    out: FloatArray = (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)
    return out


async def _linked(
    rt: PredictiveRetriever, texts: list[str], q: FloatArray, flt: models.Filter | None, exclude: tuple[str, ...]
) -> FloatArray | None:
    """The selected linked documents' vectors (C × D, most query-similar last), or None."""
    exp = rt.expansion
    assert exp is not None
    seeds: list[str] = []
    if exp.seeds > 0:
        found = await rt.store.search_batch(_unit(q)[None, :], exp.seeds, filters=[flt], exclude_ids=[list(exclude)])
        seeds = [d.doc_id for d in found[0]]
    cands = exp.graph.candidates(texts, seeds, exclude=exclude)
    if flt is not None and cands:  # another user's memory must not reach the predictor
        probe = np.zeros((1, rt.dim), np.float32)  # 1 × D: only membership matters
        probe[0, 0] = 1.0
        only = models.Filter(must=[flt, models.HasIdCondition(has_id=[point_id(c) for c in cands])])
        allowed = {d.doc_id for d in (await rt.store.search_batch(probe, len(cands), filters=[only]))[0]}
        cands = [c for c in cands if c in allowed]
    if not cands:
        return None
    vectors = await rt.store.get_vectors(list(dict.fromkeys(cands)))
    picked = exp.select(q, cands, vectors)
    return np.stack([vectors[c] for c in picked]) if picked else None


async def predict_vector(
    rt: PredictiveRetriever,
    context: Sequence[str],
    query: str,
    *,
    filter: models.Filter | None = None,
    exclude_ids: Sequence[str] = (),
) -> FloatArray:
    """The unit vector (O,) that ``rt.search(context, query, filter=filter, exclude_ids=exclude_ids)`` sends.

    Raises:
        PredictorError: an empty context, turn or query.
    """
    turns = list(context)
    if not turns or any(not isinstance(t, str) or not t.strip() for t in turns):
        raise PredictorError("the context must be a non-empty list of non-empty texts")
    if not isinstance(query, str) or not query.strip():
        raise PredictorError("empty query")
    if filter is not None and not isinstance(filter, models.Filter):
        raise PredictorError(f"filter must be a qdrant_client.models.Filter or None; got {type(filter).__name__}")
    exp = rt.expansion
    turns = turns[-(rt.max_context_length - (exp.max_candidates if exp is not None else 0)):]
    texts = list(dict.fromkeys([*turns, query]))
    vecs = await asyncio.to_thread(rt.encoder.encode, texts, batch_size=64, show_progress=False)
    emb = dict(zip(texts, np.asarray(vecs, dtype=np.float32), strict=True))
    ctx = np.stack([emb[t] for t in turns])  # N × D
    q = emb[query]  # (D,)
    if exp is not None:
        linked = await _linked(rt, [*turns, query], q, filter, tuple(exclude_ids))
        if linked is not None:
            ctx = np.concatenate([linked, ctx])  # (C + N) × D
    try:
        pred, _ = await asyncio.to_thread(rt.backend.predict, ctx[None], q[None], None)  # 1 × O
        out = np.asarray(pred, dtype=np.float32).reshape(-1)
    except Exception:
        return _unit(q)  # the retriever's fallback path
    if out.shape != (rt.dim,) or not np.isfinite(out).all() or float(np.linalg.norm(out)) == 0.0:
        return _unit(q)
    return out
