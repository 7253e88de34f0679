"""The vector-store layer: an async :class:`VectorStore` protocol and the types shared by its backends.

Two backends implement the protocol:

* :class:`prime_retriever.stores.qdrant.QdrantStore` wraps ``qdrant_client.AsyncQdrantClient``
  (embedded local mode, a single Qdrant server, or a distributed cluster);
* :class:`prime_retriever.stores.edge.EdgeStore` wraps ``qdrant-edge-py`` (Qdrant's Rust engine
  running in-process, persisted to a directory).

Conventions shared by every backend:

* A document is addressed by its **string** id. The backend point id is
  ``uuid5(POINT_ID_NAMESPACE, doc_id)``, so re-upserting a document overwrites it and never
  duplicates it. The doc id is also stored in the payload under :data:`DOC_ID_KEY`.
* The collection records the encoder that built it (name and dimension) in a reserved
  *metadata point* with the fixed id :data:`META_POINT_ID` and the payload marker
  :data:`META_MARKER_KEY`. Collection-level metadata is not available on every Qdrant version
  nor on Qdrant Edge, so a point is used everywhere. The metadata point is excluded from every
  search, count and id lookup.
* Distance is cosine. Scores are cosine similarities (higher is closer).
* Connection/transport failures surface as :class:`StoreUnavailableError`, which callers may
  retry (with a bound); every other refusal is a plain :class:`StoreError`.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Self, TypeGuard, runtime_checkable

import numpy as np
import numpy.typing as npt

from prime_retriever.errors import StoreError
from prime_retriever.text.bm25 import SparseVector

if TYPE_CHECKING:
    from qdrant_client.models import Filter

__all__ = [
    "DOC_ID_KEY",
    "HYBRID_PREFETCH",
    "MAX_K",
    "META_MARKER_KEY",
    "META_POINT_ID",
    "POINT_ID_NAMESPACE",
    "RRF_K",
    "SPARSE_VECTOR_NAME",
    "ScoredDoc",
    "StoreBase",
    "StoreError",
    "StoreMeta",
    "StoreUnavailableError",
    "VectorStore",
    "as_matrix",
    "as_query_vector",
    "check_doc_ids",
    "check_k",
    "check_sparse",
    "is_valid_k",
    "point_id",
]

#: Fixed namespace of the uuid5 point ids. Never change it: existing collections depend on it.
POINT_ID_NAMESPACE: uuid.UUID = uuid.UUID("6f1c2a52-3b0e-5b8e-9d3c-7a1d2e4f5a60")
#: Payload key under which every document point stores its string doc id.
DOC_ID_KEY = "doc_id"
#: Payload key present (with value ``True``) only on the reserved metadata point.
META_MARKER_KEY = "__prime_retriever_meta__"
#: Name of the BM25 sparse vector of a hybrid collection (Qdrant's IDF modifier).
SPARSE_VECTOR_NAME = "bm25"
#: Hits each half of a hybrid search prefetches before the store fuses them (at least k).
HYBRID_PREFETCH = 100
#: RRF's rank constant, 1 / (k + rank): Qdrant's default, the same in local mode, servers and Edge.
RRF_K = 2
#: Point id of the reserved metadata point (a uuid5 of a name no doc id can collide with by accident).
META_POINT_ID: str = str(uuid.uuid5(POINT_ID_NAMESPACE, "\x00prime_retriever/collection-metadata"))


class StoreUnavailableError(StoreError):
    """The backend is unreachable, timed out, or answered with a server-side error.

    Transient by nature: callers may retry it (with a bound). Other :class:`StoreError` s
    (e.g. a collection built with another encoder) are permanent and must not be retried.
    """


@dataclass(frozen=True)
class ScoredDoc:
    """One search hit: the document id, its cosine similarity to the query, and its payload."""

    doc_id: str
    score: float
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StoreMeta:
    """What a collection records about the encoder that built it, and whether it holds BM25 vectors."""

    encoder_name: str
    dim: int
    sparse: bool = False

    def to_payload(self) -> dict[str, Any]:
        """The metadata point's payload (a dense-only collection's is what it was before hybrid search)."""
        out: dict[str, Any] = {META_MARKER_KEY: True, "encoder_name": self.encoder_name, "dim": self.dim}
        if self.sparse:
            out["sparse"] = SPARSE_VECTOR_NAME
        return out

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any] | None, store_name: str) -> StoreMeta:
        """Parse a metadata point's payload; raise :class:`StoreError` if it is not one."""
        if not payload or payload.get(META_MARKER_KEY) is not True:
            raise StoreError(f"{store_name}: the reserved metadata point is missing its marker: {payload!r}")
        name, dim, sparse = payload.get("encoder_name"), payload.get("dim"), payload.get("sparse")
        if not isinstance(name, str) or not isinstance(dim, int) or sparse not in (None, SPARSE_VECTOR_NAME):
            raise StoreError(f"{store_name}: malformed collection metadata: {payload!r}")
        return cls(encoder_name=name, dim=dim, sparse=sparse is not None)

    def check(self, expected: StoreMeta, store_name: str) -> None:
        """Raise :class:`StoreError` naming both encoders/dims unless they equal ``expected``'s, or if ``expected``
        asks for BM25 vectors (hybrid search) that this collection does not hold."""
        if (self.encoder_name, self.dim) != (expected.encoder_name, expected.dim):
            raise StoreError(
                f"{store_name}: collection was built with encoder {self.encoder_name!r} (dim {self.dim}), "
                f"but encoder {expected.encoder_name!r} (dim {expected.dim}) was requested; "
                "re-index into a new collection or use the original encoder"
            )
        if expected.sparse and not self.sparse:  # the reverse is fine: dense searches of a hybrid collection
            raise StoreError(
                f"{store_name}: collection holds no BM25 vectors, so it cannot be searched hybrid; index "
                "into a new collection with hybrid (prime-retriever index --hybrid)"
            )


def ranked(docs: list[ScoredDoc]) -> list[ScoredDoc]:
    """Best first; equal scores ordered by doc id, so ties (duplicate passages) rank alike on every run and store."""
    return sorted(docs, key=lambda d: (-d.score, d.doc_id))


def point_id(doc_id: str) -> str:
    """The deterministic backend point id (uuid5 string) of a string doc id."""
    return str(uuid.uuid5(POINT_ID_NAMESPACE, doc_id))


def _float32(values: npt.ArrayLike, store_name: str, what: str) -> npt.NDArray[np.float32]:
    try:
        return np.asarray(values, dtype=np.float32)
    except (ValueError, TypeError) as exc:  # ragged rows, strings, objects
        raise StoreError(f"{store_name}: {what}: {exc}") from exc


def as_matrix(vectors: npt.ArrayLike, n: int | None, dim: int | None, store_name: str) -> npt.NDArray[np.float32]:
    """Validate a (n, D) batch of vectors and return it as a C-contiguous float32 array.

    Raises :class:`StoreError` on a wrong rank, row count, dimension, non-finite values or an
    all-zero row.
    """
    arr = np.ascontiguousarray(_float32(vectors, store_name, "vectors are not a numeric (n, D) array"))  # (n, D)
    if arr.ndim != 2:
        raise StoreError(f"{store_name}: expected a 2-d (n, D) array of vectors, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise StoreError(f"{store_name}: got {arr.shape[0]} vectors for {n} ids/rows")
    if dim is not None and arr.shape[1] != dim:
        raise StoreError(f"{store_name}: vectors have dim {arr.shape[1]}, collection has dim {dim}")
    if not np.isfinite(arr).all():
        raise StoreError(f"{store_name}: vectors contain NaN or inf")
    zero = np.flatnonzero(~arr.any(axis=1)) if arr.size else np.zeros(0, np.int64)
    if zero.size:  # cosine has no direction to compare
        raise StoreError(f"{store_name}: rows {zero[:5].tolist()} are all-zero vectors")
    return arr


def as_query_vector(vector: npt.ArrayLike, dim: int | None, store_name: str) -> npt.NDArray[np.float32]:
    """Validate one (D,) query vector and return it as float32."""
    arr = _float32(vector, store_name, "the query is not a numeric (D,) vector")  # (D,)
    if arr.ndim != 1:
        raise StoreError(f"{store_name}: expected a 1-d (D,) query vector, got shape {arr.shape}")
    out: npt.NDArray[np.float32] = as_matrix(arr[None, :], 1, dim, store_name)[0]
    return out


#: The most hits one search may ask for (far above any retrieval use; the engines' limits are larger).
MAX_K = 100_000


def is_valid_k(k: object) -> TypeGuard[int | np.integer[Any]]:
    """Whether ``k`` is an int in [1, :data:`MAX_K`] (a bool, a float or 2**64 is no k)."""
    return not isinstance(k, bool) and isinstance(k, int | np.integer) and bool(1 <= k <= MAX_K)


def check_k(k: object, store_name: str) -> int:
    """``k`` as an int, or a :class:`StoreError` unless :func:`is_valid_k`."""
    if not is_valid_k(k):
        raise StoreError(f"{store_name}: k must be an integer in [1, {MAX_K}], got {k!r}")
    return int(k)


def check_doc_ids(ids: object, store_name: str, what: str = "ids") -> list[str]:
    """``ids`` as a list of str doc ids, or a :class:`StoreError` (a bare str would be split into characters)."""
    if isinstance(ids, str | bytes) or not isinstance(ids, Sequence | set | frozenset):
        raise StoreError(f"{store_name}: {what} must be a sequence of str doc ids, got {type(ids).__name__}")
    out = list(ids)
    bad = [x for x in out if not isinstance(x, str)]
    if bad:
        raise StoreError(f"{store_name}: {what} must be str doc ids, got {bad[:3]!r}")
    return out


def check_sparse(vectors: object, n: int, store_name: str, what: str = "sparse vectors") -> list[SparseVector | None]:
    """``vectors`` as a list of ``n`` :class:`SparseVector` s (or ``None`` where a row has none)."""
    if isinstance(vectors, str | bytes) or not isinstance(vectors, Sequence):
        raise StoreError(f"{store_name}: {what} must be a sequence of SparseVector, got {type(vectors).__name__}")
    out = list(vectors)
    if len(out) != n:
        raise StoreError(f"{store_name}: got {len(out)} {what} for {n} rows")
    bad = [type(v).__name__ for v in out if v is not None and not isinstance(v, SparseVector)]
    if bad:
        raise StoreError(f"{store_name}: {what} must be SparseVector (prime_retriever.text.bm25), got {bad[:3]}")
    return out


@runtime_checkable
class VectorStore(Protocol):
    """An async store of (doc id, unit vector, payload) triples searched by cosine similarity.

    Call :meth:`ensure_collection` once before anything else. Use as ``async with store: ...``
    to close it on exit.
    """

    name: str
    """Human-readable identity for error messages, e.g. ``"qdrant-local(:memory:)/docs"``."""

    async def ensure_collection(self, dim: int, encoder_name: str, *, sparse: bool = False) -> None:
        """Create the collection (cosine, ``dim``; with a BM25 sparse vector if ``sparse``) or verify
        that an existing one was built by ``encoder_name`` with dimension ``dim`` (and holds BM25
        vectors if ``sparse``); raise :class:`StoreError` on a mismatch. A collection's layout is
        fixed at creation: a hybrid one may be searched dense, but every upsert needs its BM25 vectors."""
        ...

    async def upsert(
        self,
        ids: Sequence[str],
        vectors: npt.ArrayLike,
        payloads: Sequence[Mapping[str, Any]],
        *,
        sparse: Sequence[SparseVector] | None = None,
    ) -> None:
        """Insert or overwrite documents. ``vectors``: (n, D); ``ids``/``payloads``: length n;
        ``sparse``: their n BM25 vectors, required by (and only by) a ``sparse`` collection."""
        ...

    async def search(
        self,
        vector: npt.ArrayLike,
        k: int,
        filter: Filter | None = None,
        exclude_ids: Sequence[str] = (),
        *,
        sparse: SparseVector | None = None,
    ) -> list[ScoredDoc]:
        """The ``k`` nearest documents to ``vector`` (D,), best first, honouring ``filter`` and
        skipping ``exclude_ids``. With ``sparse`` (a BM25 query vector, ``sparse`` collections only)
        the search is hybrid: the dense and the sparse nearest are fused by RRF in the store, in one
        request, and the scores are RRF scores."""
        ...

    async def search_batch(
        self,
        vectors: npt.ArrayLike,
        k: int,
        filters: Sequence[Filter | None] | None = None,
        exclude_ids: Sequence[Sequence[str]] | None = None,
        *,
        sparse: Sequence[SparseVector | None] | None = None,
    ) -> list[list[ScoredDoc]]:
        """:meth:`search` for each row of ``vectors`` (B, D); ``filters``/``exclude_ids``/``sparse`` are per row."""
        ...

    async def count(self) -> int:
        """Number of documents (the metadata point is not counted)."""
        ...

    async def existing_ids(self, ids: Sequence[str]) -> set[str]:
        """The subset of ``ids`` already stored (for resumable indexing)."""
        ...

    async def get_vectors(self, ids: Sequence[str]) -> dict[str, npt.NDArray[np.float32]]:
        """The stored unit vectors (D,) of those ``ids`` that exist; unknown ids are left out."""
        ...

    async def close(self) -> None:
        """Release the backend (idempotent)."""
        ...

    async def __aenter__(self) -> VectorStore: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


def per_row(values: Sequence[Any] | None, batch: int, what: str, store_name: str, default: Any) -> list[Any]:
    """Expand an optional per-row argument of :meth:`VectorStore.search_batch` to ``batch`` items."""
    if values is None:
        return [default] * batch
    if len(values) != batch:
        raise StoreError(f"{store_name}: got {len(values)} {what} for {batch} query vectors")
    return list(values)


class StoreBase(ABC):
    """What every backend shares: id lookups (:meth:`existing_ids`, :meth:`get_vectors`) sent in chunks
    of :attr:`ID_CHUNK` through the backend's :meth:`_records`, and ``async with``.

    A backend supplies :meth:`_require_dim` (the collection's dimension; raises if closed or not yet
    opened), :meth:`_records` and :meth:`close`, and the rest of :class:`VectorStore` itself.
    """

    name: str
    #: Ids per backend lookup call: large lookups (a whole corpus's link graph) are cut into these.
    ID_CHUNK: ClassVar[int] = 1024

    @abstractmethod
    def _require_dim(self) -> int:
        """The open collection's dimension D; :class:`StoreError` if the store is closed or not opened."""

    @abstractmethod
    async def _records(self, ids: Sequence[str], *, with_vectors: bool) -> list[tuple[str, Any]]:
        """(doc id, stored vector or ``None``) of those of ``ids`` (unique, at most :attr:`ID_CHUNK`) that
        the store holds; the vector as the client returns it (a list, or a dict of named vectors)."""

    @abstractmethod
    async def close(self) -> None:
        """Release the backend (idempotent)."""

    def _doc_sparse(self, sparse: object, n: int, hybrid: bool) -> list[SparseVector] | None:
        """An upsert's ``sparse``: its n vectors for a hybrid collection (required there), else ``None``."""
        if not hybrid:
            if sparse is not None:
                raise StoreError(f"{self.name}: BM25 vectors given, but the collection was created without them")
            return None
        if sparse is None:
            raise StoreError(f"{self.name}: the collection holds BM25 vectors: upsert needs sparse= for each document")
        rows = check_sparse(sparse, n, self.name)
        if any(v is None for v in rows):
            raise StoreError(f"{self.name}: every document needs a BM25 vector (an empty one for no terms)")
        return [v for v in rows if v is not None]

    def _query_sparse(self, sparse: object, b: int, hybrid: bool) -> list[SparseVector | None]:
        """A search's per-row BM25 query vectors (``None``: a dense search for that row)."""
        if sparse is None:
            return [None] * b
        rows = check_sparse(sparse, b, self.name, "sparse query vectors")
        if not hybrid and any(v is not None for v in rows):
            raise StoreError(f"{self.name}: a hybrid search needs a collection with BM25 vectors; index with hybrid")
        return rows

    def _vector_of(self, vector: Any) -> list[float] | None:
        """The dense vector of a record: the unnamed one of a dict of named vectors, else the first."""
        if isinstance(vector, dict):
            vector = vector.get("") if "" in vector else next(iter(vector.values()), None)
        return vector if isinstance(vector, list) else None

    async def _lookup(self, ids: Sequence[str], *, with_vectors: bool) -> list[tuple[str, Any]]:
        wanted = list(dict.fromkeys(ids))
        out: list[tuple[str, Any]] = []
        for start in range(0, len(wanted), self.ID_CHUNK):
            out += await self._records(wanted[start : start + self.ID_CHUNK], with_vectors=with_vectors)
        return out

    async def existing_ids(self, ids: Sequence[str]) -> set[str]:
        """The subset of ``ids`` already stored."""
        self._require_dim()
        ids = check_doc_ids(ids, self.name)
        return {d for d, _ in await self._lookup(ids, with_vectors=False)} & set(ids)

    async def get_vectors(self, ids: Sequence[str]) -> dict[str, npt.NDArray[np.float32]]:
        """The stored vectors (D,) of those ``ids`` that exist."""
        dim = self._require_dim()
        out: dict[str, npt.NDArray[np.float32]] = {}
        for doc_id, vector in await self._lookup(check_doc_ids(ids, self.name), with_vectors=True):
            vec = self._vector_of(vector)
            if vec is not None and doc_id not in out:
                out[doc_id] = as_query_vector(vec, dim, self.name)
        return out

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
