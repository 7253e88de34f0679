"""What a search returns: :class:`Hit` (one document and the path that served it) and :class:`SearchResult`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from prime_retriever.stores.base import ScoredDoc

__all__ = ["Hit", "HitSource", "SearchResult", "hits_from"]

#: Which path served a hit: the predicted embedding, the PREPARE cache, the query-embedding
#: fallback after a predictor failure, or :meth:`PredictiveRetriever.search_baseline`.
HitSource = Literal["predicted", "cache", "fallback", "baseline"]


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
            checkpoint carries a :class:`~prime_retriever.model.score_confidence.ScoreConfidence`
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


def hits_from(docs: Iterable[ScoredDoc], source: HitSource) -> list[Hit]:
    # payloads are copied: cached hits are shared by several searches
    return [Hit(doc_id=d.doc_id, score=float(d.score), payload=dict(d.payload), source=source) for d in docs]
