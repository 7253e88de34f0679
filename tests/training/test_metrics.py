from __future__ import annotations

from typing import cast

import numpy as np
import pytest

from training.metrics import (
    all_in_at_k,
    auroc,
    bootstrap_ci,
    paired_bootstrap_ci,
    precision_at_k,
    recall_at_k,
    recall_curve,
    reciprocal_rank,
    summarize,
)

RANKED = [["a", "b", "c", "d", "e", "f"], ["x", "y", "z", "q", "r", "s"]]
GOLD = [{"b", "f"}, {"s"}]


def test_hand_computed() -> None:
    assert precision_at_k(RANKED, GOLD, 1).tolist() == [0.0, 0.0]
    assert precision_at_k(RANKED, GOLD, 5).tolist() == [0.2, 0.0]
    assert recall_at_k(RANKED, GOLD, 5).tolist() == [0.5, 0.0]
    assert recall_at_k(RANKED, GOLD, 6).tolist() == [1.0, 1.0]
    assert all_in_at_k(RANKED, GOLD, 5).tolist() == [0.0, 0.0]
    assert all_in_at_k(RANKED, GOLD, 6).tolist() == [1.0, 1.0]
    assert reciprocal_rank(RANKED, GOLD).tolist() == [0.5, 1 / 6]
    assert reciprocal_rank(RANKED, GOLD, k=5).tolist() == [0.5, 0.0]
    curve = recall_curve(RANKED, GOLD, k_max=6)
    np.testing.assert_allclose(curve, [0, 0.25, 0.25, 0.25, 0.25, 1.0])


def test_summarize_keys_and_values() -> None:
    s = summarize(RANKED, GOLD, [1.0, 3.0, 2.0])
    assert s["p@5"] == pytest.approx(0.1) and s["mrr"] == pytest.approx((0.5 + 1 / 6) / 2)
    assert s["p50_ms"] == 2.0 and s["r@10"] == 1.0 and s["allin@10"] == 1.0
    assert s["p@1"] == 0.0  # neither row's first hit is gold
    assert s["n"] == 2.0
    lo, hi = cast(list[float], s["p@5_ci"])
    assert lo <= cast(float, s["p@5"]) <= hi
    mlo, mhi = bootstrap_ci(reciprocal_rank(RANKED, GOLD))
    assert s["mrr_ci"] == [mlo, mhi] and mlo <= cast(float, s["mrr"]) <= mhi


def test_bootstrap_ci_brackets_mean_and_shrinks() -> None:
    rng = np.random.default_rng(0)
    small = rng.random(50)
    big = rng.random(5000)
    lo, hi = bootstrap_ci(small)
    assert lo < small.mean() < hi
    blo, bhi = bootstrap_ci(big)
    assert bhi - blo < hi - lo
    plo, phi = paired_bootstrap_ci(big + 0.1, big)
    assert plo == pytest.approx(0.1) and phi == pytest.approx(0.1)


def test_auroc() -> None:
    assert auroc(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])) == 1.0
    assert auroc(np.array([0.9, 0.8, 0.2, 0.1]), np.array([0, 0, 1, 1])) == 0.0
    assert auroc(np.array([0.5, 0.5, 0.5, 0.5]), np.array([0, 1, 0, 1])) == 0.5
    # hand-computed: positives {0.4, 0.8}, negatives {0.3, 0.5}: pairs won 1 + 2 = 3 of 4
    assert auroc(np.array([0.4, 0.8, 0.3, 0.5]), np.array([1, 1, 0, 0])) == 0.75
    assert np.isnan(auroc(np.array([0.1, 0.2]), np.array([1, 1])))


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="rankings"):
        precision_at_k(RANKED, GOLD[:1], 5)
    with pytest.raises(ValueError, match="gold"):
        precision_at_k(RANKED, [set(), {"a"}], 5)
    # a repeated id would count one gold document twice (recall above 1, P@k inflated)
    for metric in (precision_at_k, recall_at_k, all_in_at_k, reciprocal_rank, recall_curve):
        with pytest.raises(ValueError, match="repeats a document id"):
            metric([["a", "a", "b"]], [{"a"}], 3)
        with pytest.raises(ValueError, match="k must be >= 1"):
            metric(RANKED, GOLD, 0)
    with pytest.raises(ValueError, match="equal-length"):
        auroc(np.array([0.1, 0.2, 0.3]), np.array([1, 0]))
    with pytest.raises(ValueError, match="finite"):
        auroc(np.array([np.nan, 0.2]), np.array([1, 0]))
    assert bootstrap_ci([1.0, 1.0, 1.0]) == (1.0, 1.0)  # type: ignore[arg-type]  # a plain list is accepted
