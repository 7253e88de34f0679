"""The benchmark's own store folder (``OUT/store``): recognised before it is rebuilt, never anything else deleted.

``bench --out OUT`` indexes into ``OUT/store`` and rebuilds it when the corpus changed. A folder of
that name that the benchmark did not build (the user's files, another tool's data) is refused with
:class:`~prime_retriever.errors.DataError` rather than deleted: only a folder whose every entry is
one a store of that kind creates, and which carries this project's collection (Qdrant local mode's
``meta.json`` naming it, or Qdrant Edge's ``edge_config.json``), is removed, entry by entry.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from prime_retriever.errors import DataError

__all__ = ["is_own_store", "refuse_foreign_store", "remove_own_store"]

COLLECTION = "prime_docs"  # the collection open_store gives the benchmark
# what each store kind writes in its folder, and nothing else
_ENTRIES = {"local": {"meta.json", "collection", ".lock"}, "edge": {"edge_config.json", "segments", "wal"}}


def is_own_store(path: Path, kind: str) -> bool:
    """Whether ``path`` is a ``kind`` ("local" or "edge") store folder holding nothing but the store's own files."""
    if kind not in _ENTRIES or not path.is_dir() or path.is_symlink():
        return False
    names = {p.name for p in path.iterdir()}
    if not names or not names <= _ENTRIES[kind]:
        return False
    if kind == "edge":
        return (path / "edge_config.json").is_file()
    try:
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    collections = meta.get("collections") if isinstance(meta, dict) else None
    return isinstance(collections, dict) and COLLECTION in collections


def refuse_foreign_store(path: Path, kind: str) -> None:
    """Raise :class:`DataError` if ``path`` exists and is not :func:`is_own_store` (before any work is done)."""
    if path.exists() and not is_own_store(path, kind):
        raise DataError(
            f"{path} exists but is not the {kind} store this benchmark builds (it holds other files, or no "
            f"'{COLLECTION}' collection): move it away or choose another --out; nothing was deleted"
        )


def remove_own_store(path: Path, kind: str) -> None:
    """Remove the store folder ``path`` if :func:`is_own_store`; else raise :class:`DataError` and touch nothing."""
    refuse_foreign_store(path, kind)
    for entry in sorted(path.iterdir()):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    path.rmdir()
