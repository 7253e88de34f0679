"""Integration tests: the real encoder, the real shipped data, real Qdrant (local mode / edge)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import prime_data_dir

REPO = Path(__file__).resolve().parents[1]

__all__ = ["REPO", "prime_data_dir"]
