"""Hybrid search as a user would build it from the same parts: a dense ranking fused with BM25 by RRF.

The peer rows of the leave-one-out matrix: ``hybrid_query`` (the query embedding's dense hits fused
with BM25 hits of the query text, what Haystack's ``QdrantHybridRetriever`` gives over Qdrant) and
``hybrid_predictor`` (the predicted vector's dense hits fused with the same BM25 hits).

BM25 runs here, client-side, with ``bm25s`` (k1 = 1.2, b = 0.75, the English Snowball stemmer and
stop words, as Qdrant's own BM25 model), over the same ``"title: text"`` the Y-Encoder sees, with the
same scope filter and exclusions as the dense search. The fusion is qdrant-client's own
:func:`qdrant_client.hybrid.fusion.reciprocal_rank_fusion` (the RRF that Qdrant local mode runs for a
``FusionQuery``, with Qdrant's default constant), so the ranking is the one Qdrant's Query API would
return for the same two prefetches. The stores do not hold sparse vectors (yet): this is a benchmark
baseline, not a serving path.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from qdrant_client import models
from qdrant_client.hybrid.fusion import reciprocal_rank_fusion

from prime_retriever.stores.base import point_id
from prime_retriever.text.documents import Document

__all__ = ["BM25Ranker", "rrf_fuse"]


class BM25Ranker:
    """BM25 over a fixed corpus; :meth:`rank` gives the ids of the best-scoring documents for a text."""

    def __init__(self, docs: Sequence[Document], *, show_progress: bool = False) -> None:
        import bm25s
        import Stemmer

        self._bm25s = bm25s
        self._stemmer = Stemmer.Stemmer("english")
        self.ids = [d.id for d in docs]
        self._scopes = np.array([d.scope for d in docs], dtype=object)  # (n,)
        self._row = {d: i for i, d in enumerate(self.ids)}
        tokens = bm25s.tokenize([d.encoding_text for d in docs], stopwords="en", stemmer=self._stemmer,
                                show_progress=show_progress)
        self._index = bm25s.BM25(k1=1.2, b=0.75)
        self._index.index(tokens, show_progress=show_progress)

    def rank(self, text: str, k: int, *, scope: str = "", exclude_ids: Iterable[str] = ()) -> list[str]:
        """The ids of the ``k`` best documents for ``text`` (score > 0 only: a document sharing no term
        is not a hit, as in a sparse-vector search), within ``scope`` if given, without ``exclude_ids``."""
        terms = self._bm25s.tokenize([text], stopwords="en", stemmer=self._stemmer, return_ids=False,
                                     show_progress=False)[0]
        scores = np.asarray(self._index.get_scores(terms), dtype=np.float64)  # (n,)
        if scope:
            scores[self._scopes != scope] = 0.0
        for d in exclude_ids:
            if d in self._row:
                scores[self._row[d]] = 0.0
        top = np.argsort(-scores, kind="stable")[:k]
        return [self.ids[i] for i in top if scores[i] > 0.0]


def rrf_fuse(rankings: Sequence[Sequence[str]], k: int) -> list[str]:
    """The top ``k`` ids of the reciprocal-rank fusion of ``rankings`` (each best first), by Qdrant's RRF."""
    responses = [[models.ScoredPoint(id=point_id(d), version=0, score=float(len(r) - i), payload={"doc_id": d})
                  for i, d in enumerate(r)] for r in rankings]
    fused = reciprocal_rank_fusion(responses, limit=k)
    return [str((p.payload or {})["doc_id"]) for p in fused]
