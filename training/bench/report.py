"""The benchmark's outputs: a markdown table, ``report.json`` and ``recall_at_k.png``."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from prime_retriever.atomic_file import write_bytes_atomic

METHOD_ORDER = ("query_baseline", "linear_adapter", "concat_baseline", "predictor")
TABLE_METRICS = ("p@1", "p@5", "r@10", "allin@10", "mrr", "p50_ms")


def _fmt(v: float, metric: str) -> str:
    if isinstance(v, float) and math.isnan(v):
        return "–"
    return f"{v:.1f}" if metric.endswith("_ms") else f"{v:.3f}"


def markdown_table(framings: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    """One row per (framing, method), with the CIs and the predictor's relative gains."""
    head = "| framing | method | n | " + " | ".join(TABLE_METRICS) + " | P@5 95% CI | MRR 95% CI |"
    lines = [head, "|" + "---|" * (len(TABLE_METRICS) + 5)]
    for framing, methods in framings.items():
        for name in [m for m in METHOD_ORDER if m in methods]:
            m = methods[name]
            cells = [_fmt(float(m[k]), k) for k in TABLE_METRICS]
            p_lo, p_hi = m["p@5_ci"]
            r_lo, r_hi = m["mrr_ci"]
            lines.append(
                f"| {framing} | {name} | {int(m['n'])} | "
                + " | ".join(cells)
                + f" | [{p_lo:.3f}, {p_hi:.3f}] | [{r_lo:.3f}, {r_hi:.3f}] |"
            )
    gains = [
        "",
        "| framing | P@5 ×query | MRR ×query | P@5 ×adapter | MRR ×adapter | P@5 − adapter (95% CI) "
        "| confidence AUROC |",
        "|---|---|---|---|---|---|---|",
    ]
    for framing, methods in framings.items():
        g = methods.get("predictor", {}).get("gains")
        if not g:
            continue
        lo, hi = g["p@5_minus_adapter_ci"]
        gains.append(
            f"| {framing} | {g['p@5_x_query']:.3f} | {g['mrr_x_query']:.3f} | {g['p@5_x_adapter']:.3f} "
            f"| {g['mrr_x_adapter']:.3f} | [{lo:+.3f}, {hi:+.3f}] "
            f"| {_fmt(methods['predictor']['confidence_auroc'], '')} |"
        )
    return "\n".join(lines + gains)


def write_json(report: Mapping[str, Any], path: Path) -> None:
    def clean(x: Any) -> Any:
        if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        if isinstance(x, np.generic):
            return clean(x.item())
        return x

    write_bytes_atomic(path, json.dumps(clean(report), indent=2).encode("utf-8"))  # the old report, or the new


def plot_recall(curves: Mapping[str, Mapping[str, np.ndarray]], path: Path) -> None:
    """Recall@k for k = 1..100: one panel per framing, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(len(curves), 1)
    fig, axes = plt.subplots(1, n, figsize=(5 * n, 4), squeeze=False)
    for ax, (framing, methods) in zip(axes[0], curves.items(), strict=False):
        for name in [m for m in METHOD_ORDER if m in methods]:
            curve = methods[name]
            ax.plot(np.arange(1, len(curve) + 1), curve, label=name)
        ax.set_xscale("log")
        ax.set_xlabel("k")
        ax.set_ylabel("recall@k")
        ax.set_title(framing)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
