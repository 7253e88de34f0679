"""The confidence of a search, read from its hits' scores: P(the top hit is a gold document).

The predictor's own confidence head sees only its [PRED] state, before any search; on the
benchmark it tells a right top hit from a wrong one no better than chance (AUROC 0.47-0.54 per
framing). The scores of the search it leads to do: a top hit far ahead of the second is usually
right. :class:`ScoreConfidence` is a logistic model over two features of the ranked scores,

    p = sigmoid(w_top * s_1 + w_margin * (s_1 - s_2) + b)

(``s_1 >= s_2``: the cosine scores of the first two hits; with one hit the margin is 0). Training
fits it on the held-out validation questions against the training corpus
(:meth:`ScoreConfidence.fit`) and stores it in the checkpoint; the retriever applies it to every
predicted search. The scores' scale depends on the corpus, so the probabilities are calibrated
for a corpus like the training one; their order (what the AUROC measures) holds on any.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ScoreConfidence", "score_features"]


def score_features(scores: Sequence[float]) -> tuple[float, float]:
    """``(s_1, s_1 - s_2)`` of scores ranked best first; ``ValueError`` on no score or a non-finite one."""
    if len(scores) == 0:
        raise ValueError("no scores: a search without hits has no top hit to be confident in")
    s1 = float(scores[0])
    s2 = float(scores[1]) if len(scores) > 1 else s1
    if not (math.isfinite(s1) and math.isfinite(s2)):
        raise ValueError(f"scores must be finite; got {s1}, {s2}")
    return s1, s1 - s2


class ScoreConfidence(BaseModel):
    """A logistic model of "the top hit is gold" over (top-1 score, top-1 - top-2 margin)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    top_weight: float
    margin_weight: float
    bias: float
    n_fitted: int = Field(ge=0, description="validation questions it was fitted on")
    hit_rate: float = Field(ge=0.0, le=1.0, description="share of them whose top hit was gold")

    def describe(self) -> str:
        """One line: the model and what it was fitted on."""
        sign = "-" if self.bias < 0 else "+"
        w, m, b = self.top_weight, self.margin_weight, abs(self.bias)
        model = f"sigmoid({w:.3f} * s1 + {m:.3f} * (s1 - s2) {sign} {b:.3f})"
        return f"{model}, fitted on {self.n_fitted} validation questions ({self.hit_rate:.0%} with a gold top hit)"

    def probability(self, scores: Sequence[float]) -> float:
        """P(top hit is gold) for hits ranked best first; 0.0 for no hits."""
        if len(scores) == 0:
            return 0.0
        s1, margin = score_features(scores)
        z = self.top_weight * s1 + self.margin_weight * margin + self.bias
        return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))

    @classmethod
    def fit(
        cls,
        top: npt.ArrayLike,  # n: s_1 per question
        second: npt.ArrayLike,  # n: s_2 per question
        hit: npt.ArrayLike,  # n bool: the top hit is gold
        *,
        l2: float = 1e-3,
        iterations: int = 50,
    ) -> ScoreConfidence:
        """Maximum-likelihood fit (Newton's method, a small ``l2`` on the standardised weights).

        ``ValueError`` on fewer than 2 questions, non-finite scores, or mismatched lengths. With
        only hits or only misses the weights are 0 and the bias gives the observed rate
        (clipped away from 0 and 1), so the probability is constant.
        """
        s1 = np.asarray(top, dtype=np.float64).reshape(-1)
        s2 = np.asarray(second, dtype=np.float64).reshape(-1)
        y = np.asarray(hit, dtype=np.float64).reshape(-1)
        if not (s1.shape == s2.shape == y.shape):
            raise ValueError(f"top, second and hit must have one length; got {s1.shape}, {s2.shape}, {y.shape}")
        if s1.size < 2:
            raise ValueError(f"fitting needs at least 2 questions; got {s1.size}")
        if not (np.isfinite(s1).all() and np.isfinite(s2).all()):
            raise ValueError("scores must be finite")
        rate = float(y.mean())
        if rate in (0.0, 1.0):
            clipped = min(max(rate, 1e-3), 1 - 1e-3)
            return cls(top_weight=0.0, margin_weight=0.0, bias=math.log(clipped / (1 - clipped)), n_fitted=int(y.size),
                       hit_rate=rate)
        x = np.stack([s1, s1 - s2], axis=1)  # n × 2
        mu, sd = x.mean(0), x.std(0)
        sd[sd == 0] = 1.0
        z = np.hstack([(x - mu) / sd, np.ones((x.shape[0], 1))])  # n × 3, standardised + intercept
        w = np.zeros(3)
        reg = np.array([l2, l2, 0.0]) * x.shape[0]
        for _ in range(iterations):
            p = 1.0 / (1.0 + np.exp(-(z @ w)))
            grad = z.T @ (p - y) + reg * w  # 3
            hess = (z * (p * (1 - p))[:, None]).T @ z + np.diag(reg) + 1e-9 * np.eye(3)  # 3 × 3
            step = np.linalg.solve(hess, grad)
            w -= step
            if float(np.abs(step).max()) < 1e-10:
                break
        raw = w[:2] / sd  # back to raw scores
        return cls(top_weight=float(raw[0]), margin_weight=float(raw[1]), bias=float(w[2] - (raw * mu).sum()),
                   n_fitted=int(y.size), hit_rate=rate)
