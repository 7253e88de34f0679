"""Shared fixtures: the data directory and small predictor configs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from prime_retriever.encoders import HFTextEncoder

REPO = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    return Path(os.environ.get("PRIME_DATA_DIR", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def prime_data_dir() -> Path:
    d = data_dir()
    if not (d / "hotpotqa").is_dir():
        pytest.skip(f"PRIME_DATA_DIR has no hotpotqa/ ({d}); point PRIME_DATA_DIR at the shared data")
    return d


@pytest.fixture(scope="session")
def minilm() -> HFTextEncoder:
    """The real offline all-MiniLM-L6-v2 encoder, loaded once per test session."""
    from prime_retriever.encoders import HFTextEncoder

    return HFTextEncoder()
