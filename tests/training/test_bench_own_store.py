"""Issue 30: `bench --out OUT` rebuilds OUT/store only when the benchmark built it; nothing else is deleted."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from prime_retriever.errors import DataError
from prime_retriever.stores.open import open_store
from training.bench.own_store import is_own_store, refuse_foreign_store, remove_own_store
from training.bench.recipe import Recipe
from training.bench.runner import BenchOptions, run_bench
from training.bench.suite import BenchSuite


def _real_store(path: Path, kind: str) -> None:
    async def build() -> None:
        store = open_store(f"{kind}:{path}")
        await store.ensure_collection(4, "enc")
        await store.upsert(["a"], np.ones((1, 4), np.float32), [{"text": "x"}])
        await store.close()

    asyncio.run(build())


@pytest.mark.parametrize("kind", ["local", "edge"])
def test_only_a_store_folder_of_the_benchmarks_own_is_removed(tmp_path: Path, kind: str) -> None:
    own = tmp_path / "own"
    _real_store(own, kind)
    assert is_own_store(own, kind)
    remove_own_store(own, kind)
    assert not own.exists()
    for setup in ("keep", "keep_in_store", "empty_json", "other_kind"):
        d = tmp_path / setup
        if setup == "keep":
            d.mkdir()
            (d / "keep.txt").write_text("mine")
        elif setup == "keep_in_store":
            _real_store(d, kind)
            (d / "keep.txt").write_text("mine")
        elif setup == "empty_json":
            d.mkdir()
            (d / "meta.json").write_text("{}")
            (d / "edge_config.json").write_bytes(b"")
        else:
            _real_store(d, "edge" if kind == "local" else "local")
        before = sorted(p.relative_to(d) for p in d.rglob("*"))
        assert not is_own_store(d, kind), setup
        with pytest.raises(DataError, match="nothing was deleted"):
            remove_own_store(d, kind)
        assert sorted(p.relative_to(d) for p in d.rglob("*")) == before, setup
    refuse_foreign_store(tmp_path / "absent", kind)  # nothing there: nothing to refuse


def test_bench_refuses_an_unrelated_out_store_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "keep.txt").write_text("mine")
    suite = BenchSuite(train=[], eval={}, corpus={}, sources={}, eval_dataset={})
    opts = BenchOptions(out=tmp_path, store="edge", seed=0, recipe=Recipe())
    with pytest.raises(DataError, match="not the edge store this benchmark builds"):
        asyncio.run(run_bench(suite, opts))
    assert (tmp_path / "store" / "keep.txt").read_text() == "mine"
