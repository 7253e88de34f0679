"""Shared fixtures: the data directory and small predictor configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    return Path(os.environ.get("PRIME_DATA_DIR", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def prime_data_dir() -> Path:
    d = data_dir()
    if not (d / "hotpotqa").is_dir():
        pytest.skip(f"PRIME_DATA_DIR has no hotpotqa/ ({d}); point PRIME_DATA_DIR at the shared data")
    return d
