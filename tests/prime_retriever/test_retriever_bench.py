"""bench-retriever end to end on a small real corpus: it runs, and its figures are consistent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prime_retriever.cli import main


@pytest.mark.slow
def test_bench_retriever_small(prime_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rb.json"
    rc = main([
        "bench-retriever", "--data-dir", str(prime_data_dir), "--max-docs", "300", "--queries", "24",
        "--latency-queries", "12", "--throughput-calls", "32", "--callers", "8", "--cache-queries", "12",
        "--json", str(out),
    ])
    assert rc == 0
    figures = json.loads(out.read_text())
    text = capsys.readouterr().out
    assert "p50" in text and "p95" in text
    flat = json.dumps(figures)
    assert "local" in flat and "edge" in flat
