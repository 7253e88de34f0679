"""Issue 30: opening a store never deletes what the library did not create, and every failure to open is a StoreError.

Real Qdrant local mode and qdrant-edge. Tests run as root, which ignores file permissions, so an
unwritable location is made the way root cannot write either: a path under a regular file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from prime_retriever.errors import StoreError
from prime_retriever.stores.edge import EdgeStore
from prime_retriever.stores.open import open_store


def _tree(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def _empty_shard_with_user_files(path: Path) -> None:
    """An Edge shard whose creation was cut off before its metadata point, in a folder that holds the user's files."""
    import qdrant_edge as qe

    path.mkdir(parents=True)
    (path / "notes.txt").write_text("my notes")
    (path / "mydocs").mkdir()
    (path / "mydocs" / "thesis.txt").write_text("chapter 1")
    cfg = qe.EdgeConfig(vectors=qe.EdgeVectorParams(size=4, distance=qe.Distance.Cosine))
    qe.EdgeShard.create(str(path), cfg).close()


async def test_opening_edge_on_an_empty_shard_beside_user_files_keeps_the_users_files(tmp_path: Path) -> None:
    d = tmp_path / "store"
    _empty_shard_with_user_files(d)
    store = open_store(f"edge:{d}")
    try:
        await store.ensure_collection(4, "enc")  # removed the whole folder, before
        await store.upsert(["a"], np.ones((1, 4), np.float32), [{"text": "x"}])
        assert await store.count() == 1
    except StoreError as exc:  # refusing is allowed too, if it says why
        assert "notes.txt" in str(exc) or "other files" in str(exc)
    finally:
        await store.close()
    assert (d / "notes.txt").read_text() == "my notes"
    assert (d / "mydocs" / "thesis.txt").read_text() == "chapter 1"


async def test_opening_edge_on_a_folder_that_is_not_a_shard_refuses_and_leaves_it_as_it_was(tmp_path: Path) -> None:
    d = tmp_path / "notshard"
    d.mkdir()
    (d / "notes.txt").write_text("mine")
    before = _tree(d)
    store = EdgeStore(d)
    with pytest.raises(StoreError, match="not a Qdrant Edge shard"):
        await store.ensure_collection(4, "enc")
    await store.close()
    assert _tree(d) == before  # a stray segments/ folder was left, before


@pytest.mark.parametrize("kind", ["local", "edge"])
async def test_a_store_that_cannot_be_created_is_a_store_error(tmp_path: Path, kind: str) -> None:
    (tmp_path / "afile").write_text("mine")
    for where in (tmp_path / "afile", tmp_path / "afile" / "store"):
        with pytest.raises(StoreError, match="cannot"):  # a raw NotADirectoryError / FileExistsError, before
            store = open_store(f"{kind}:{where}")  # local mode opens its folder here, Edge on first use
            try:
                await store.ensure_collection(4, "enc")
            finally:
                await store.close()
    assert (tmp_path / "afile").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
