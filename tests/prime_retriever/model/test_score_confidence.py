"""ScoreConfidence: the logistic model of "the top hit is gold" over the hits' scores."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from prime_retriever.model.score_confidence import ScoreConfidence, score_features


def sigmoid(z: np.ndarray) -> np.ndarray:
    out: np.ndarray = 1.0 / (1.0 + np.exp(-z))
    return out


def synthetic(n: int, *, w_top: float, w_margin: float, bias: float, seed: int = 0
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores like a cosine search's (s_1 in [0.3, 0.9], margin in [0, 0.2]) and labels drawn from the model."""
    rng = np.random.default_rng(seed)
    s1 = rng.uniform(0.3, 0.9, n)
    margin = rng.exponential(0.05, n).clip(0, 0.2)
    hit = rng.random(n) < sigmoid(w_top * s1 + w_margin * margin + bias)
    return s1, s1 - margin, hit


def test_fit_recovers_the_model_that_drew_the_labels() -> None:
    s1, s2, hit = synthetic(40_000, w_top=6.0, w_margin=30.0, bias=-4.0)
    sc = ScoreConfidence.fit(s1, s2, hit)
    assert sc.top_weight == pytest.approx(6.0, rel=0.1)
    assert sc.margin_weight == pytest.approx(30.0, rel=0.1)
    assert sc.bias == pytest.approx(-4.0, rel=0.1)
    assert sc.n_fitted == 40_000 and sc.hit_rate == pytest.approx(float(hit.mean()))
    # the probability of one search is the model's, read from its ranked scores
    assert sc.probability([0.8, 0.7, 0.1]) == pytest.approx(
        float(sigmoid(np.array(sc.top_weight * 0.8 + sc.margin_weight * 0.1 + sc.bias))), abs=1e-12)


def test_a_wider_margin_means_more_confidence() -> None:
    sc = ScoreConfidence.fit(*synthetic(5_000, w_top=2.0, w_margin=40.0, bias=-2.0))
    probs = [sc.probability([0.7, 0.7 - m]) for m in (0.0, 0.02, 0.05, 0.1)]
    assert probs == sorted(probs) and probs[-1] - probs[0] > 0.3
    assert all(0.0 < p < 1.0 for p in probs)


def test_one_hit_has_margin_zero_and_no_hit_confidence_zero() -> None:
    sc = ScoreConfidence(top_weight=1.0, margin_weight=5.0, bias=0.0, n_fitted=2, hit_rate=0.5)
    assert score_features([0.6]) == (0.6, 0.0)
    assert sc.probability([0.6]) == sc.probability([0.6, 0.6])
    assert sc.probability([]) == 0.0
    with pytest.raises(ValueError, match="finite"):
        sc.probability([float("nan"), 0.1])


def test_extreme_logits_do_not_overflow() -> None:
    sc = ScoreConfidence(top_weight=0.0, margin_weight=1e6, bias=0.0, n_fitted=2, hit_rate=0.5)
    assert sc.probability([1.0, -1.0]) == 1.0
    assert sc.probability([-1.0, 1.0]) == 0.0  # scores not ranked: a negative margin, still a probability


def test_labels_of_one_kind_give_a_constant_rate() -> None:
    s1, s2, _ = synthetic(100, w_top=1.0, w_margin=1.0, bias=0.0)
    never = ScoreConfidence.fit(s1, s2, np.zeros(100, bool))
    always = ScoreConfidence.fit(s1, s2, np.ones(100, bool))
    assert never.top_weight == never.margin_weight == 0.0
    assert never.probability([0.9, 0.1]) == pytest.approx(1e-3)
    assert always.probability([0.2, 0.2]) == pytest.approx(1 - 1e-3)


def test_bad_fits_and_bad_weights_are_refused() -> None:
    with pytest.raises(ValueError, match="one length"):
        ScoreConfidence.fit([0.5, 0.4], [0.4], [True, False])
    with pytest.raises(ValueError, match="at least 2"):
        ScoreConfidence.fit([0.5], [0.4], [True])
    with pytest.raises(ValueError, match="finite"):
        ScoreConfidence.fit([0.5, math.inf], [0.4, 0.3], [True, False])
    with pytest.raises(ValidationError):
        ScoreConfidence(top_weight=math.nan, margin_weight=0.0, bias=0.0, n_fitted=2, hit_rate=0.5)
    with pytest.raises(ValidationError):
        ScoreConfidence(top_weight=0.0, margin_weight=0.0, bias=0.0, n_fitted=2, hit_rate=1.5)
    with pytest.raises(ValidationError):
        ScoreConfidence.model_validate({"top_weight": 0, "margin_weight": 0, "bias": 0, "n_fitted": 2,
                                        "hit_rate": 0.5, "code": "os.system('x')"})
