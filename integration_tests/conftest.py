"""Integration tests: the real encoder, the real shipped data, real Qdrant (local mode / edge)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def prime_data_dir() -> Path:
    d = Path(os.environ.get("PRIME_DATA_DIR", REPO.parent / "shared" / "data"))
    if not (d / "hotpotqa").is_dir():
        pytest.skip(f"no shipped data at {d}: set PRIME_DATA_DIR")
    return d
