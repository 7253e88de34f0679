"""prime-retriever bench-encoder on a few shipped HotpotQA paragraphs: the table and the JSON report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prime_retriever.cli.main import main


@pytest.mark.slow
def test_bench_encoder_small(prime_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "enc.json"
    rc = main([
        "bench-encoder", "--data-dir", str(prime_data_dir), "--docs", "60", "--questions", "20",
        "--query-latency", "5", "--paths", "eager,onnx-int8,no-such-path", "--out", str(out),
    ])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["baseline"] == "eager" and report["chosen"] == "onnx-int8"
    assert set(report["paths"]) == {"eager", "onnx-int8"} and "no-such-path" in report["skipped"]
    for row in report["paths"].values():
        for key in ("texts_per_s", "query_p50_ms", "query_p95_ms", "cosine_mean", "cosine_min", "peak_rss_mb"):
            assert row[key] > 0, key
    assert report["paths"]["eager"]["cosine_min"] == pytest.approx(1.0, abs=1e-6)
    assert 0.98 <= report["paths"]["onnx-int8"]["cosine_min"] < 1.0
    assert report["docs"] >= 40 and report["questions"] == 20
    table = capsys.readouterr().out
    assert "| onnx-int8 (chosen) |" in table and "| eager |" in table
