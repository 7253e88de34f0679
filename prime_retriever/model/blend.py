"""Do no harm: fall back towards the query embedding where the prediction is unlikely to help.

Two pure rules over what a search already has (no retriever dependency, so the retriever, the
benchmark and a framework adapter can share them):

* :func:`blend_vectors`: ``normalize(alpha * prediction + (1 - alpha) * query)``: a fixed
  interpolation that keeps the query's neighbourhood in play; ``alpha = 1`` is the prediction,
  ``alpha = 0`` the query.
* :class:`ConfidenceGate`: search with both, keep the hits whose search-score confidence
  (:class:`~prime_retriever.model.score_confidence.ScoreConfidence`, fitted on validation and saved
  in the checkpoint) is higher; the predicted hits win ties and a margin can favour either side. It
  costs one extra store search (the query's), never an extra predictor forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from prime_retriever.model.score_confidence import ScoreConfidence

__all__ = ["ConfidenceGate", "GateChoice", "blend_vectors"]

GateChoice = Literal["predicted", "query"]


def blend_vectors(prediction: npt.ArrayLike, query: npt.ArrayLike, alpha: float) -> npt.NDArray[np.float32]:
    """The unit vector ``normalize(alpha * prediction + (1 - alpha) * query)``; both inputs (D,) or (B, D).

    Both are normalised first, so ``alpha`` weighs directions, not lengths. ``ValueError`` on an
    ``alpha`` outside [0, 1], mismatched shapes or non-finite input; where the mix is the zero vector
    (opposite inputs at ``alpha = 0.5``) the query is returned.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    p = np.asarray(prediction, dtype=np.float64)
    q = np.asarray(query, dtype=np.float64)
    if p.shape != q.shape or p.ndim not in (1, 2):
        raise ValueError(f"prediction {p.shape} and query {q.shape} must both be (D,) or (B, D)")
    if not (np.isfinite(p).all() and np.isfinite(q).all()):
        raise ValueError("prediction and query must be finite")

    def unit(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        n = np.linalg.norm(x, axis=-1, keepdims=True)
        out: npt.NDArray[np.float64] = np.divide(x, n, out=np.zeros_like(x), where=n > 0)
        return out

    qu = unit(q)
    mix = unit(alpha * unit(p) + (1.0 - alpha) * qu)  # (D,) or (B, D)
    zero = np.linalg.norm(mix, axis=-1, keepdims=True) == 0
    return np.where(zero, qu, mix).astype(np.float32)


@dataclass(frozen=True)
class ConfidenceGate:
    """Choose between the predicted and the query-embedding search by their hits' score confidence.

    ``margin`` > 0 demands that the query search be that much more confident before it replaces the
    prediction (< 0 favours the query).
    """

    confidence: ScoreConfidence
    margin: float = 0.0

    def choose(self, predicted_scores: Sequence[float], query_scores: Sequence[float]) -> GateChoice:
        """Which search to serve, from the two searches' scores ranked best first."""
        if len(query_scores) == 0:
            return "predicted"
        p = self.confidence.probability(predicted_scores)
        q = self.confidence.probability(query_scores)
        return "query" if q > p + self.margin else "predicted"
