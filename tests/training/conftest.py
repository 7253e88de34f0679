"""Shared fixtures of the dataset-layer tests: the real data directory, parsed once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.data import Dataset, hotpotqa_files, load_hotpotqa_pool


@pytest.fixture(scope="session")
def hotpot_pool_first_hop(prime_data_dir: Path) -> Dataset:
    return load_hotpotqa_pool(hotpotqa_files(prime_data_dir), "first_hop")
