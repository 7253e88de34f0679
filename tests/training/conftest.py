"""Shared fixtures of the dataset-layer tests: the real data directory, parsed once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.data import Dataset, data_dir, hotpotqa_files, load_hotpotqa_pool


@pytest.fixture(scope="session")
def shared_data() -> Path:
    d = data_dir()
    if not (d / "hotpotqa").is_dir():
        pytest.skip(f"shared data not found at {d} (set PRIME_DATA_DIR)")
    return d


@pytest.fixture(scope="session")
def hotpot_pool_first_hop(shared_data: Path) -> Dataset:
    return load_hotpotqa_pool(hotpotqa_files(shared_data), "first_hop")
