"""``open_store``: a :class:`~prime_retriever.stores.base.VectorStore` from a spec string."""

from __future__ import annotations

import os

from prime_retriever.errors import StoreError
from prime_retriever.stores.base import VectorStore
from prime_retriever.stores.qdrant import QdrantStore

__all__ = ["open_store"]


def open_store(spec: str | VectorStore, *, path: str | os.PathLike[str] | None = None,
               collection: str = "prime_docs", api_key: str | None = None, timeout_s: float = 10.0) -> VectorStore:
    """Build a :class:`VectorStore` from a spec.

    * ``":memory:"`` (or ``"local"`` without ``path``): Qdrant local mode in memory;
    * ``"local"`` with ``path``, or ``"local:DIR"``: Qdrant local mode persisted under DIR;
    * ``"edge"`` with ``path``, or ``"edge:DIR"``: Qdrant Edge under DIR;
    * ``"http://..."`` / ``"https://..."``: a Qdrant server or cluster;
    * any other string: a directory for Qdrant local mode;
    * a :class:`VectorStore`: returned as is.
    """
    if not isinstance(spec, str):
        return spec
    p = None if path is None else str(path)
    if spec.startswith(("http://", "https://")):
        return QdrantStore(collection, url=spec, api_key=api_key, timeout=timeout_s)
    if spec == ":memory:" or (spec == "local" and p is None):
        return QdrantStore(collection, location=":memory:")
    if spec == "local":
        return QdrantStore(collection, path=p)
    if spec.startswith("local:"):
        return QdrantStore(collection, path=spec[len("local:"):])
    if spec == "edge" or spec.startswith("edge:"):
        from prime_retriever.stores.edge import EdgeStore

        where = spec[len("edge:"):] if spec.startswith("edge:") else p
        if not where:
            raise StoreError("the edge store needs a directory: 'edge:DIR' or path=DIR")
        return EdgeStore(where)
    if not spec:
        raise StoreError("empty store spec")
    return QdrantStore(collection, path=spec)
