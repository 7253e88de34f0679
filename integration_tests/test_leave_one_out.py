"""The reduced leave-one-out protocol end to end: real data, the real encoder, real Qdrant Edge, real training."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from training.bench.leave_one_out import LeaveOneOutOptions, run_leave_one_out

METHODS = {"query_baseline", "linear_adapter", "concat_baseline", "predictor", "blend_0.5", "gate", "bm25",
           "hybrid_query", "hybrid_predictor", "oracle"}


def _has_cross_encoder() -> bool:
    from prime_retriever.errors import EncoderError
    from prime_retriever.text.cross_encoder import MS_MARCO_MINILM_L12
    from prime_retriever.text.packaged_models import find_packaged_files

    try:
        find_packaged_files(MS_MARCO_MINILM_L12)
    except EncoderError:
        return False
    return True


@pytest.fixture(scope="module")
def quick(prime_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("loo")
    return run_leave_one_out(prime_data_dir, LeaveOneOutOptions.quick(out, ("orsharc", "dstc11"))), out


def test_one_run_per_left_out_dataset_with_every_method(quick: tuple[dict[str, Any], Path]) -> None:
    report, out = quick
    assert [r["left_out"] for r in report["runs"]] == ["orsharc", "dstc11"]
    for run in report["runs"]:
        # trained on everything but the left-out dataset
        assert run["left_out"] not in {n for n, c in run["sources"].items() if c["train"]}
        assert set(run["framings"]) == {"given"}
        given = run["framings"]["given"]
        assert set(given) >= METHODS
        for m in METHODS:
            for metric in ("p@5", "mrr"):
                s = given[m][metric]
                assert 0.0 <= s["ci"][0] <= s["mean"] <= s["ci"][1] <= 1.0
        # the per-question choice bounds both of the methods it chooses between
        for metric in ("p@5", "mrr"):
            assert given["oracle"][metric]["mean"] >= max(given["query_baseline"][metric]["mean"],
                                                          given["predictor"][metric]["mean"]) - 1e-12
        # bounded by steps: two epochs over a fixed row count, never by the clock
        assert run["training"]["stop_reason"] in ("max_epochs", "early_stopping")
        assert run["training"]["steps"] > 0
    saved = json.loads((out / "leave_one_out.json").read_text(encoding="utf-8"))
    assert [r["left_out"] for r in saved["runs"]] == ["orsharc", "dstc11"]
    md = (out / "leave_one_out.md").read_text(encoding="utf-8")
    assert "| orsharc/given | predictor |" in md and "verdicts:" in md
    assert "| orsharc/given | hybrid_predictor |" in md and "hybrid_predictor: P@5 ×" in md
    for run in report["runs"]:
        lo, hi = run["framings"]["given"]["hybrid_predictor"]["p@5"]["minus_hybrid_query_ci"]
        assert lo <= hi


def test_a_rerun_can_evaluate_the_checkpoints_it_left(quick: tuple[dict[str, Any], Path],
                                                      prime_data_dir: Path) -> None:
    """``--loo-reuse``: the same figures from the same checkpoints, without training again."""
    report, out = quick
    rerank = 3 if _has_cross_encoder() else 0  # and the opt-in second stage, where its files are at hand
    again = run_leave_one_out(prime_data_dir, replace(LeaveOneOutOptions.quick(out, ("orsharc", "dstc11")),
                                                      reuse=True, rerank=rerank))
    for run in again["runs"] if rerank else ():
        given = run["framings"]["given"]
        for m in ("hybrid_query+rerank", "hybrid_predictor+rerank"):
            assert 0.0 <= given[m]["p@5"]["ci"][0] <= given[m]["p@5"]["mean"] <= given[m]["p@5"]["ci"][1]
        # the top 3 are re-ordered, never replaced: P@3-or-deeper membership is the hybrid row's, so MRR can
        # only move within the first three ranks; P@5 counts the same five documents
        for base in ("hybrid_query", "hybrid_predictor"):
            assert given[f"{base}+rerank"]["p@5"]["mean"] == pytest.approx(given[base]["p@5"]["mean"])
        assert run["rerank_ms"]["top_n"] == 3 and run["rerank_ms"]["n"] == 2 * given["query_baseline"]["n"]
        assert 0 < run["rerank_ms"]["p50"] <= run["rerank_ms"]["p95"]
    for first, second in zip(report["runs"], again["runs"], strict=True):
        assert second["training"]["reused_checkpoint"] is True
        assert second["training"]["steps"] == first["training"]["steps"]
        for m in ("predictor", "gate", "hybrid_query", "hybrid_predictor", "query_baseline"):
            assert second["framings"]["given"][m] == first["framings"]["given"][m]
    record = out / "without_orsharc" / "training.json"
    record.write_text(record.read_text(encoding="utf-8").replace('"weights_sha256": "', '"weights_sha256": "0'),
                      encoding="utf-8")
    with pytest.raises(RuntimeError, match="not the ones"):  # a record that does not match its weights
        run_leave_one_out(prime_data_dir, replace(LeaveOneOutOptions.quick(out, ("orsharc",)), reuse=True))
