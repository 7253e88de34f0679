"""bench-retriever end to end on a small real corpus: it runs, and its figures are consistent."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from prime_retriever.cli.main import main


@pytest.mark.slow
def test_bench_retriever_small(prime_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rb.json"
    rc = main([
        "bench-retriever", "--data-dir", str(prime_data_dir), "--max-docs", "300", "--queries", "24",
        "--latency-queries", "12", "--throughput-calls", "32", "--callers", "8", "--cache-queries", "12",
        "--json", str(out), "--backend", "onnx",  # honoured without --checkpoint too (it was ignored: eager)
    ])
    assert rc == 0
    figures = json.loads(out.read_text())
    assert figures["predictor"].endswith(", onnx")
    text = capsys.readouterr().out
    assert "p50" in text and "p95" in text
    flat = json.dumps(figures)
    assert "local" in flat and "edge" in flat
    # text-in rows on both stores, with the fast encoder by default
    assert figures["encoder"].endswith("+onnx-int8")
    for kind in ("local", "edge"):
        row = figures[kind]
        assert row["encoder_text_p50_s"] > 0 and 0 < row["encoder_share"] < 1
        n = row["text_after_prepare_hits"] + row["text_after_prepare_misses"]
        assert n == 12 and row["text_after_prepare_misses_identical"] == row["text_after_prepare_misses"]
        assert row["text_all_cached_p50_s"] > 0 and row["query_encode_p50_s"] > 0
    assert "after prepare(session, context)" in text and "the floor of a PREPARE" in text
    edge = figures["edge"]  # hybrid against dense on one shard holding BM25 vectors
    assert edge["hybrid_measured"] == 12 and edge["hybrid_text_p50_s"] > 0 and edge["dense_text_p50_s"] > 0
    assert edge["hybrid_changed_rankings"] > 0  # the BM25 half moved rankings
    assert "hybrid (predicted + BM25" in text



@pytest.mark.slow
def test_bench_retriever_serves_a_link_checkpoint_with_its_expansion(
    prime_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A checkpoint trained with link expansion is benchmarked as it is served: with a link graph
    (built from the bench corpus here), not silently without one."""
    from prime_retriever.model.checkpoint import save_checkpoint
    from prime_retriever.model.random_predictor import random_predictor

    model = random_predictor(384, perturb=0.003, max_context_length=6, link_candidates=3, link_seeds=1)
    save_checkpoint(model, tmp_path / "ck")
    out = tmp_path / "rb.json"
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*no link graph was given.*")
        rc = main([
            "bench-retriever", "--data-dir", str(prime_data_dir), "--checkpoint", str(tmp_path / "ck"),
            "--max-docs", "300", "--queries", "16", "--latency-queries", "8", "--throughput-calls", "16",
            "--callers", "4", "--cache-queries", "8", "--json", str(out),
        ])
    assert rc == 0
    figures = json.loads(out.read_text())
    assert "link expansion (3 candidates, 1 seed; graph built from the corpus)" in figures["predictor"]
