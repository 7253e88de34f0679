"""Shared fixtures: the shipped data directory and the real encoder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from prime_retriever.text.encoders import HFTextEncoder


@pytest.fixture(scope="session")
def prime_data_dir() -> Path:
    from training.data import data_dir

    d = data_dir()
    if not (d / "hotpotqa").is_dir():
        pytest.skip(f"PRIME_DATA_DIR has no hotpotqa/ ({d}); point PRIME_DATA_DIR at the shared data")
    return d


@pytest.fixture(scope="session")
def minilm() -> HFTextEncoder:
    """The real offline all-MiniLM-L6-v2 encoder, loaded once per test session."""
    from prime_retriever.text.encoders import HFTextEncoder

    return HFTextEncoder()
