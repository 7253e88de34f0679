"""The latency benchmark's report shape and CLI (tiny config, few iterations, no wall-clock assertion)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prime_retriever.cli.main import main as cli_main
from prime_retriever.model.config import PredictorConfig
from training.bench import latency as latency_bench
from training.bench.latency import PathResult, format_table


@pytest.fixture
def tiny_configs(monkeypatch: pytest.MonkeyPatch) -> None:
    tiny = PredictorConfig(
        input_dim=32, hidden_dim=64, output_dim=32, num_layers=1, num_heads=4, max_context_length=10, dropout=0.0
    )
    monkeypatch.setattr(latency_bench, "default_configs", lambda: {"default": tiny, "small": tiny})


def test_quick_report_keys(tiny_configs: None) -> None:
    lines: list[str] = []
    report = latency_bench.run_benchmark(quick=True, log=lines.append)
    paths = report["paths"]
    for name in ("eager-fp32", "static-fp32", "torch-int8", "onnx-fp32", "onnx-int8", "cached-context"):
        assert name in paths, name
        for b in ("b1", "b8"):
            entry = paths[name][b]
            assert entry["p50_ms"] > 0 and entry["p95_ms"] >= entry["p50_ms"]
            assert -1.0 <= entry["cosine"] <= 1.0 + 1e-6
    assert paths["eager-fp32"]["b1"]["cosine"] == pytest.approx(1.0)
    assert paths["static-fp32"]["b1"]["cosine"] > 0.99999  # padding changes nothing in fp32
    assert paths["cached-context"]["b8"]["cosine"] > 0.999
    assert paths["onnx-int8"]["b1"]["cosine"] > 0.99
    assert "skipped" in paths["compiled-bf16"]
    assert report["best_path"] in paths and paths[report["best_path"]]["correct"]
    assert report["speedup_b1_best"] > 0 and report["peak_rss_mb"] > 0
    assert "small" in report and report["small"]["best_path"] in report["small"]["paths"]
    assert any("speedup" in line for line in lines)


def test_cli_writes_json(tiny_configs: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The real quick benchmark through the command: what it prints and writes agree."""
    out = tmp_path / "lat.json"
    assert cli_main(["bench-latency", "--quick", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert {"paths", "best_path", "speedup_b1_best", "best_b1_p50_ms", "peak_rss_mb", "small"} <= set(data)
    assert data["best_path"] in data["paths"] and data["best_b1_p50_ms"] > 0
    assert data["best_b1_p50_ms"] == data["paths"][data["best_path"]]["b1"]["p50_ms"]
    printed = capsys.readouterr().out
    assert "best path" in printed and data["best_path"] in printed


def test_correctness_bar_and_table() -> None:
    ok = PathResult("a", batches={1: {"p50_ms": 2.0, "p95_ms": 3.0, "cosine": 0.9995}})
    low = PathResult("b", batches={1: {"p50_ms": 1.0, "p95_ms": 1.0, "cosine": 0.995}})
    low_int8 = PathResult("c", int8=True, batches={1: {"p50_ms": 1.0, "p95_ms": 1.0, "cosine": 0.995}})
    assert ok.correct() and not low.correct() and low_int8.correct()
    assert not PathResult("d", skipped="no").correct()
    ref = PathResult("eager-fp32", batches={1: {"p50_ms": 4.0, "p95_ms": 5.0, "cosine": 1.0}})
    summary = latency_bench._summary({"eager-fp32": ref, "a": ok, "b": low})
    assert summary["best_path"] == "a"  # "b" is faster but fails the accuracy bar
    assert summary["speedup_b1_best"] == pytest.approx(2.0)
    table = format_table("t", {"eager-fp32": ref, "a": ok, "b": low, "d": PathResult("d", skipped="why")})
    assert "2.00x" in table and "NO" in table and "skipped: why" in table
