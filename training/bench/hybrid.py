"""BM25 alone, the ``bm25`` reference row of the leave-one-out matrix, client-side with ``bm25s``.

k1 = 1.2, b = 0.75, the English Snowball stemmer and stop words (as Qdrant's own BM25 model), over the
same ``"title: text"`` the Y-Encoder sees, with the same scope filter and exclusions as the dense search.
The hybrid rows do not use it: they search the store's own BM25 vectors
(:class:`~prime_retriever.text.bm25.Bm25Encoder`), fused with the dense half by the store.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from prime_retriever.text.documents import Document

__all__ = ["BM25Ranker"]


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
        if not terms:  # stop words only: nothing to match (bm25s itself fails on an empty query)
            return []
        scores = np.asarray(self._index.get_scores(terms), dtype=np.float64)  # (n,)
        if scope:
            scores[self._scopes != scope] = 0.0
        for d in exclude_ids:
            if d in self._row:
                scores[self._row[d]] = 0.0
        top = np.argsort(-scores, kind="stable")[:k]
        return [self.ids[i] for i in top if scores[i] > 0.0]
