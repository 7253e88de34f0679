"""The do-no-harm rules: the blend of prediction and query, and the score-confidence gate."""

from __future__ import annotations

import numpy as np
import pytest

from prime_retriever.model.blend import ConfidenceGate, blend_vectors
from prime_retriever.model.score_confidence import ScoreConfidence


def test_blend_ends_are_the_inputs_and_the_middle_bisects() -> None:
    rng = np.random.default_rng(0)
    p, q = rng.normal(size=(3, 8)), rng.normal(size=(3, 8))  # B × D, not unit
    pu = p / np.linalg.norm(p, axis=1, keepdims=True)
    qu = q / np.linalg.norm(q, axis=1, keepdims=True)
    np.testing.assert_allclose(blend_vectors(p, q, 1.0), pu, atol=1e-6)
    np.testing.assert_allclose(blend_vectors(p, q, 0.0), qu, atol=1e-6)
    mid = blend_vectors(p, q, 0.5)
    np.testing.assert_allclose(np.linalg.norm(mid, axis=1), 1.0, atol=1e-6)
    # the half blend is as close to the prediction as to the query, whatever their lengths were
    np.testing.assert_allclose((mid * pu).sum(1), (mid * qu).sum(1), atol=1e-6)
    assert blend_vectors(p[0], q[0], 0.5).shape == (8,)


def test_opposite_inputs_fall_back_to_the_query() -> None:
    q = np.array([1.0, 0.0, 0.0])
    np.testing.assert_allclose(blend_vectors(-q, q, 0.5), q)


@pytest.mark.parametrize(("p", "q", "alpha"), [
    (np.ones(3), np.ones(3), 1.5), (np.ones(3), np.ones(4), 0.5), (np.array([np.nan, 1, 1]), np.ones(3), 0.5),
])
def test_bad_blend_input_raises(p: np.ndarray, q: np.ndarray, alpha: float) -> None:
    with pytest.raises(ValueError):
        blend_vectors(p, q, alpha)


def test_gate_serves_the_more_confident_search() -> None:
    conf = ScoreConfidence(top_weight=5.0, margin_weight=20.0, bias=-3.0, n_fitted=10, hit_rate=0.5)
    gate = ConfidenceGate(conf)
    assert gate.choose([0.9, 0.5], [0.6, 0.59]) == "predicted"  # a clear predicted winner
    assert gate.choose([0.6, 0.59], [0.9, 0.5]) == "query"
    assert gate.choose([0.7, 0.6], [0.7, 0.6]) == "predicted"  # ties keep the prediction
    assert gate.choose([0.7, 0.6], []) == "predicted"
    # a margin demands more of the query before it replaces the prediction
    assert ConfidenceGate(conf, margin=0.99).choose([0.6, 0.59], [0.9, 0.5]) == "predicted"
