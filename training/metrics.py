"""Retrieval metrics for the benchmark: P@k, R@k, AllIn@k, MRR, bootstrap CIs and AUROC.

Every function takes, per evaluation item, the ranked document ids the method returned and the
set of gold ids. Per-item values are averaged over items.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _check(ranked: Sequence[Sequence[str]], gold: Sequence[set[str]], k: int = 1) -> None:
    if len(ranked) != len(gold):
        raise ValueError(f"{len(ranked)} rankings for {len(gold)} gold sets")
    if any(len(g) == 0 for g in gold):
        raise ValueError("every item needs at least one gold id")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    for i, r in enumerate(ranked):  # a repeated id would count one gold document twice
        if len(set(r)) != len(r):
            raise ValueError(f"ranking {i} repeats a document id")


def precision_at_k(ranked: Sequence[Sequence[str]], gold: Sequence[set[str]], k: int) -> np.ndarray:
    """Per item: |top-k ∩ gold| / k."""
    _check(ranked, gold, k)
    return np.array([sum(d in g for d in r[:k]) / k for r, g in zip(ranked, gold, strict=True)], dtype=np.float64)


def recall_at_k(ranked: Sequence[Sequence[str]], gold: Sequence[set[str]], k: int) -> np.ndarray:
    """Per item: the fraction of gold documents in the top k."""
    _check(ranked, gold, k)
    return np.array([len(set(r[:k]) & g) / len(g) for r, g in zip(ranked, gold, strict=True)], dtype=np.float64)


def all_in_at_k(ranked: Sequence[Sequence[str]], gold: Sequence[set[str]], k: int) -> np.ndarray:
    """Per item: 1 when every gold document is in the top k."""
    _check(ranked, gold, k)
    return np.array([float(g <= set(r[:k])) for r, g in zip(ranked, gold, strict=True)], dtype=np.float64)


def reciprocal_rank(ranked: Sequence[Sequence[str]], gold: Sequence[set[str]], k: int = 100) -> np.ndarray:
    """Per item: 1 / rank of the first gold document within the top k, else 0."""
    _check(ranked, gold, k)
    out = np.zeros(len(ranked), dtype=np.float64)
    for i, (r, g) in enumerate(zip(ranked, gold, strict=True)):
        for rank, d in enumerate(r[:k], start=1):
            if d in g:
                out[i] = 1.0 / rank
                break
    return out


def recall_curve(ranked: Sequence[Sequence[str]], gold: Sequence[set[str]], k_max: int = 100) -> np.ndarray:
    """Mean recall@k for k = 1..k_max: shape (k_max,)."""
    _check(ranked, gold, k_max)
    hits = np.zeros((len(ranked), k_max), dtype=np.float64)  # items × k
    for i, (r, g) in enumerate(zip(ranked, gold, strict=True)):
        for rank, d in enumerate(r[:k_max]):
            if d in g:
                hits[i, rank] = 1.0 / len(g)
    curve: np.ndarray = np.cumsum(hits, axis=1).mean(axis=0)  # k_max
    return curve


def bootstrap_ci(values: np.ndarray, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean (items resampled with replacement)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        raise ValueError("no values")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(n_boot, len(values)))
    means = values[idx].mean(axis=1)
    return float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2))


def paired_bootstrap_ci(
    a: np.ndarray, b: np.ndarray, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float]:
    """CI of mean(a) - mean(b) over the same items, resampled together."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values differ in shape: {a.shape} vs {b.shape}")
    return bootstrap_ci(a - b, n_boot=n_boot, alpha=alpha, seed=seed)


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with tie correction); NaN if one class is absent."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    if scores.shape != labels.shape or scores.ndim != 1:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must be equal-length vectors")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite")
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # average ranks over ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def summarize(
    ranked: Sequence[Sequence[str]], gold: Sequence[set[str]], latencies_ms: Sequence[float] = ()
) -> dict[str, float | list[float]]:
    """The benchmark's metric set for one method and framing."""
    p5 = precision_at_k(ranked, gold, 5)
    rr = reciprocal_rank(ranked, gold, 100)
    p5_lo, p5_hi = bootstrap_ci(p5)
    mrr_lo, mrr_hi = bootstrap_ci(rr)
    return {
        "p@1": float(precision_at_k(ranked, gold, 1).mean()),
        "p@5": float(p5.mean()),
        "r@10": float(recall_at_k(ranked, gold, 10).mean()),
        "allin@10": float(all_in_at_k(ranked, gold, 10).mean()),
        "mrr": float(rr.mean()),
        "p50_ms": float(np.median(latencies_ms)) if len(latencies_ms) else float("nan"),
        "p@5_ci": [p5_lo, p5_hi],
        "mrr_ci": [mrr_lo, mrr_hi],
        "n": float(len(ranked)),
    }
