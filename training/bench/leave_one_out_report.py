"""The leave-one-out matrix: per left-out dataset and method, P@5 and MRR with 95 % CIs, and the verdicts.

Every method's CI is a bootstrap of its mean; its paired CI against the query embedding resamples
the same questions for both (the measure of "never below the query beyond the CI": the paired
CI's upper end is not below 0). ``oracle`` is, per question and per metric, the better of the query
embedding and the predictor: what a perfect per-question choice between the two would reach.
``hybrid_predictor`` is also compared with ``hybrid_query`` (paired, the same way): the pipeline a
user would build from the same parts (both searched hybrid in the store, see :mod:`training.bench.leave_one_out`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.bench.leave_one_out_names import CONVERSATIONAL
from training.bench.report import write_json
from training.metrics import bootstrap_ci, paired_bootstrap_ci, precision_at_k, reciprocal_rank

__all__ = ["GOAL_X_QUERY", "matrix_markdown", "method_metrics", "write_reports"]

GOAL_X_QUERY = 1.15  # the P@5 goal on every left-out conversational dataset
GOAL_X_HYBRID = 1.10  # hybrid_predictor P@5 over hybrid_query
ORDER = ("query_baseline", "linear_adapter", "concat_baseline", "predictor", "gate", "bm25", "hybrid_query",
         "hybrid_predictor", "hybrid_query+rerank", "hybrid_predictor+rerank", "oracle")
_TAIL = 4  # ORDER[_TAIL:] follows the blends


def _stats(values: np.ndarray, query: np.ndarray) -> dict[str, Any]:
    lo, hi = bootstrap_ci(values)
    dlo, dhi = paired_bootstrap_ci(values, query)
    return {"mean": float(values.mean()), "ci": [lo, hi], "minus_query_ci": [dlo, dhi]}


def method_metrics(ranked: Mapping[str, Sequence[Sequence[str]]], gold: Sequence[set[str]]) -> dict[str, Any]:
    """``{method: {"p@5": stats, "mrr": stats}}`` for every method in ``ranked``, plus ``oracle``."""
    per = {m: (precision_at_k(r, gold, 5), reciprocal_rank(r, gold)) for m, r in ranked.items()}
    q5, qrr = per["query_baseline"]
    if "predictor" in per:
        p5, prr = per["predictor"]
        per["oracle"] = (np.maximum(q5, p5), np.maximum(qrr, prr))
    out: dict[str, Any] = {m: {"p@5": _stats(v5, q5), "mrr": _stats(vrr, qrr), "n": len(gold)}
                           for m, (v5, vrr) in per.items()}
    if "hybrid_query" in per and "hybrid_predictor" in per:
        (h5, hrr), (hp5, hprr) = per["hybrid_query"], per["hybrid_predictor"]
        for metric, a, b in (("p@5", hp5, h5), ("mrr", hprr, hrr)):
            out["hybrid_predictor"][metric]["minus_hybrid_query_ci"] = list(paired_bootstrap_ci(a, b))
    return out


def _methods(framing: Mapping[str, Any]) -> list[str]:
    names = [m for m in framing if isinstance(framing[m], dict)]
    blends = sorted(m for m in names if m.startswith("blend_"))
    return [m for m in ORDER[:_TAIL] if m in names] + blends + [m for m in ORDER[_TAIL:] if m in names]


def _cell(s: Mapping[str, Any]) -> str:
    return f"{s['mean']:.3f} [{s['ci'][0]:.3f}, {s['ci'][1]:.3f}]"


def matrix_markdown(report: Mapping[str, Any]) -> str:
    """The matrix (one row per left-out dataset/framing and method) and the verdicts."""
    lines = ["| left out / framing | method | n | P@5 [95% CI] | ×query | MRR [95% CI] | ×query "
             "| P@5 − query (paired CI) | MRR − query (paired CI) |", "|---|---|---|---|---|---|---|---|---|"]
    verdicts = []
    for run in report["runs"]:
        for framing, methods in run["framings"].items():
            key = f"{run['left_out']}/{framing}"
            q = methods["query_baseline"]
            for m in _methods(methods):
                s = methods[m]
                x5 = s["p@5"]["mean"] / max(q["p@5"]["mean"], 1e-9)
                xr = s["mrr"]["mean"] / max(q["mrr"]["mean"], 1e-9)
                d5, dr = s["p@5"]["minus_query_ci"], s["mrr"]["minus_query_ci"]
                diff = "–" if m == "query_baseline" else f"[{d5[0]:+.3f}, {d5[1]:+.3f}]"
                diffr = "–" if m == "query_baseline" else f"[{dr[0]:+.3f}, {dr[1]:+.3f}]"
                lines.append(f"| {key} | {m} | {s['n']} | {_cell(s['p@5'])} | {x5:.3f} | {_cell(s['mrr'])} "
                             f"| {xr:.3f} | {diff} | {diffr} |")
            for m in [x for x in _methods(methods) if x not in ("query_baseline", "oracle")]:
                s = methods[m]
                harm = s["p@5"]["minus_query_ci"][1] < 0 or s["mrr"]["minus_query_ci"][1] < 0
                x5 = s["p@5"]["mean"] / max(q["p@5"]["mean"], 1e-9)
                goal = "" if run["left_out"] not in CONVERSATIONAL else \
                    f", P@5 ×{x5:.3f} {'>=' if x5 >= GOAL_X_QUERY else '<'} {GOAL_X_QUERY}"
                verdicts.append(f"  [{'FAIL' if harm else 'ok'}] {key} {m}: "
                                f"{'below the query beyond the CI' if harm else 'not below the query beyond the CI'}"
                                f"{goal}")
            if "hybrid_query" in methods and "hybrid_predictor" in methods:
                hq, hp = methods["hybrid_query"]["p@5"], methods["hybrid_predictor"]["p@5"]
                xh = hp["mean"] / max(hq["mean"], 1e-9)
                lo, hi = hp["minus_hybrid_query_ci"]
                verdicts.append(f"  [{'ok' if xh >= GOAL_X_HYBRID else 'FAIL'}] {key} hybrid_predictor: P@5 "
                                f"×{xh:.3f} hybrid_query ({'>=' if xh >= GOAL_X_HYBRID else '<'} {GOAL_X_HYBRID}; "
                                f"paired CI [{lo:+.3f}, {hi:+.3f}])")
            if methods.get("gate_share_query") is not None:
                verdicts.append(f"  (gate served the query's hits on {methods['gate_share_query']:.0%} of {key})")
    timing = [f"{r['left_out']}: train {r['seconds']['train']:.0f} s ({r['training'].get('steps')} steps, "
              f"{r['training'].get('epochs')} epochs, stop: {r['training'].get('stop_reason')}), "
              f"evaluate {r['seconds']['evaluate']:.0f} s" + _rerank_note(r) for r in report["runs"]]
    sec = report["seconds"]
    return "\n".join([*lines, "", "verdicts:", *verdicts, "", f"timings (total {sec['total']:.0f} s; shared "
                      f"encode + links + index {sec['shared']:.0f} s):", *(f"  {t}" for t in timing)])


def _rerank_note(run: Mapping[str, Any]) -> str:
    ms = run.get("rerank_ms")
    return "" if not ms else (f"; rerank of the top {ms['top_n']}: p50 {ms['p50']:.0f} ms, p95 {ms['p95']:.0f} ms "
                              f"per search ({ms['n']} lists)")


def write_reports(report: Mapping[str, Any], out: Path) -> str:
    """Write ``leave_one_out.json`` and ``leave_one_out.md``; return the markdown."""
    md = matrix_markdown(report)
    write_json(report, out / "leave_one_out.json")
    (out / "leave_one_out.md").write_text(md + "\n", encoding="utf-8")
    return md
