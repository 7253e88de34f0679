"""A read-only :class:`~prime_retriever.VectorStore` over a collection another framework built.

``PredictiveRetriever`` searches it as it searches its own collections: the predicted vector goes to
the framework's dense vector (named or not), doc ids follow the framework's id scheme, and the
payload comes back as the framework wrote it, so each framework's component rebuilds its own node or
document from it. Nothing is ever written: :meth:`ForeignQdrantStore.upsert` refuses, and
:meth:`ForeignQdrantStore.ensure_collection` only checks the collection's dimension and distance
(a foreign collection records no encoder name, so that it was embedded by the retriever's encoder
is the caller's promise).

The client may be sync (``QdrantClient``: what LangChain and Haystack's sync path hold; in local mode
it is the only handle on the data) or async (``AsyncQdrantClient``); a sync call blocks the loop
it runs on, as Qdrant local mode does anyway.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx
import numpy.typing as npt
from qdrant_client import AsyncQdrantClient, QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse
from tqdm.auto import tqdm

from prime_retriever import Document, ScoredDoc, StoreError, StoreUnavailableError
from prime_retriever.integrations.payload_schema import PayloadSchema, PointId
from prime_retriever.stores.base import StoreBase, as_matrix, as_query_vector, check_doc_ids, check_k, per_row, point_id
from prime_retriever.text.bm25 import SparseVector

__all__ = ["ForeignCollectionError", "ForeignQdrantStore"]

#: HTTP statuses that mean "not now" (retryable by the retriever's policy).
_UNAVAILABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_SCROLL_PAGE = 256


class ForeignCollectionError(StoreError):
    """A foreign collection cannot serve what was asked: a missing vector, a wrong dimension or distance,
    a write, or link expansion on a collection without titles."""


class ForeignQdrantStore(StoreBase):
    """Search a framework's existing Qdrant collection; never write to it.

    Args:
        client: the framework's ``QdrantClient`` or ``AsyncQdrantClient`` (not closed by this store).
        collection: the collection's name.
        schema: where the framework keeps ids, titles, texts and the dense vector.
    """

    def __init__(self, client: QdrantClient | AsyncQdrantClient, collection: str, schema: PayloadSchema) -> None:
        self._client = client
        self.collection = collection
        self.schema = schema
        self.name = f"{schema.framework}-qdrant/{collection}"
        self._dim: int | None = None
        self._closed = False
        # PredictiveRetriever names points by prime's uuid5 of a doc id when it restricts link
        # candidates to a filter (HasIdCondition); a foreign collection has its own point ids, so
        # those conditions are rewritten with the ids of every doc id this store has handed out.
        self._foreign_of_prime: dict[str, PointId] = {}

    # -- plumbing ----------------------------------------------------------------------------------

    async def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        if self._closed:
            raise StoreError(f"{self.name}: store is closed")
        try:
            out = fn()
            return await out if inspect.isawaitable(out) else out
        except StoreError:
            raise
        except UnexpectedResponse as exc:
            if exc.status_code in _UNAVAILABLE_STATUSES:
                raise StoreUnavailableError(f"{self.name}: {what}: {exc}") from exc
            raise StoreError(f"{self.name}: {what}: {exc}") from exc
        except (ResponseHandlingException, httpx.TransportError, ConnectionError, TimeoutError) as exc:
            raise StoreUnavailableError(f"{self.name}: {what}: {exc!r}") from exc
        except Exception as exc:  # local mode raises ValueError for a missing collection or vector name
            raise StoreError(f"{self.name}: {what}: {exc!r}") from exc

    def _require_dim(self) -> int:
        if self._closed:
            raise StoreError(f"{self.name}: store is closed")
        if self._dim is None:
            raise StoreError(f"{self.name}: call ensure_collection(dim, encoder_name) first")
        return self._dim

    def _remember(self, doc_id: str) -> str:
        self._foreign_of_prime.setdefault(point_id(doc_id), self.schema.point_id(doc_id))
        return doc_id

    def _condition(self, cond: Any) -> Any:
        if isinstance(cond, models.HasIdCondition):
            return models.HasIdCondition(has_id=[self._foreign_of_prime.get(str(i), i) for i in cond.has_id])
        if isinstance(cond, models.Filter):
            return self._rewrite(cond)
        return cond

    def _rewrite(self, flt: models.Filter) -> models.Filter:
        def part(conds: Any) -> Any:
            if conds is None:
                return None
            if isinstance(conds, list):
                return [self._condition(c) for c in conds]
            return self._condition(conds)

        return models.Filter(must=part(flt.must), should=part(flt.should), must_not=part(flt.must_not),
                             min_should=flt.min_should)

    def _filter(self, user: models.Filter | None, exclude_ids: Sequence[str]) -> models.Filter | None:
        if user is not None and not isinstance(user, models.Filter):
            raise StoreError(f"{self.name}: filter must be a qdrant_client.models.Filter, got {type(user)}")
        if not exclude_ids:
            return None if user is None else self._rewrite(user)
        skip = models.HasIdCondition(has_id=[self.schema.point_id(d) for d in exclude_ids])
        return models.Filter(must=None if user is None else [self._rewrite(user)], must_not=[skip])

    def _vector_of(self, vector: Any) -> list[float] | None:
        if isinstance(vector, dict):
            vector = vector.get(self.schema.vector_name or "")
        return vector if isinstance(vector, list) else None

    # -- VectorStore -------------------------------------------------------------------------------

    async def ensure_collection(self, dim: int, encoder_name: str, *, sparse: bool = False) -> None:
        """Check that the collection exists and its dense vector is ``dim``-d cosine; create nothing.
        ``sparse`` (hybrid search) is refused: a framework's sparse vectors are not Qdrant-BM25 ones."""
        if sparse:
            raise ForeignCollectionError(
                f"{self.name}: hybrid search runs on collections prime_retriever indexed (their BM25 vectors); "
                "a foreign collection is searched dense"
            )
        c = self._client
        if not await self._call("collection_exists", lambda: c.collection_exists(self.collection)):
            raise ForeignCollectionError(f"{self.name}: no such collection (a foreign collection is never created)")
        info = await self._call("get_collection", lambda: c.get_collection(self.collection))
        vectors = info.config.params.vectors
        name = self.schema.vector_name
        # the unnamed vector is also the one named "" (how LangChain creates it)
        params = vectors.get(name or "") if isinstance(vectors, dict) else (vectors if name is None else None)
        if not isinstance(params, models.VectorParams):
            have = sorted(vectors) if isinstance(vectors, dict) else "one unnamed vector"
            raise ForeignCollectionError(
                f"{self.name}: no dense vector {name or '(unnamed)'!r}; the collection has {have}"
            )
        if params.size != dim:
            raise ForeignCollectionError(
                f"{self.name}: the dense vector is {params.size}-d, the encoder {encoder_name!r} is {dim}-d"
            )
        if params.distance != models.Distance.COSINE:
            raise ForeignCollectionError(
                f"{self.name}: distance {params.distance}; the predictor's vectors are compared by cosine"
            )
        self._dim = dim

    async def upsert(
        self,
        ids: Sequence[str],
        vectors: npt.ArrayLike,
        payloads: Sequence[Mapping[str, Any]],
        *,
        sparse: Sequence[SparseVector] | None = None,
    ) -> None:
        """Refused: a foreign collection is written only by its framework."""
        raise ForeignCollectionError(f"{self.name}: read-only; index through the framework that owns the collection")

    async def search(
        self, vector: npt.ArrayLike, k: int, filter: models.Filter | None = None, exclude_ids: Sequence[str] = (),
        *,
        sparse: SparseVector | None = None,
    ) -> list[ScoredDoc]:
        """The ``k`` nearest documents to ``vector`` (D,), best first."""
        q = as_query_vector(vector, self._require_dim(), self.name)  # (D,)
        return (await self.search_batch(q[None, :], k, [filter], [exclude_ids], sparse=[sparse]))[0]

    async def search_batch(
        self,
        vectors: npt.ArrayLike,
        k: int,
        filters: Sequence[models.Filter | None] | None = None,
        exclude_ids: Sequence[Sequence[str]] | None = None,
        *,
        sparse: Sequence[SparseVector | None] | None = None,
    ) -> list[list[ScoredDoc]]:
        """One search per row of ``vectors`` (B, D), sent as one ``query_batch_points`` (dense only)."""
        mat = as_matrix(vectors, None, self._require_dim(), self.name)  # (B, D)
        k = check_k(k, self.name)
        b = mat.shape[0]
        self._query_sparse(sparse, b, hybrid=False)
        flts = per_row(filters, b, "filters", self.name, None)
        rows = per_row(exclude_ids, b, "exclude_ids", self.name, ())
        excl = [check_doc_ids(e, self.name, "exclude_ids") for e in rows]
        if b == 0:
            return []
        requests = [
            models.QueryRequest(query=mat[i].tolist(), using=self.schema.vector_name,
                                filter=self._filter(flts[i], excl[i]), limit=k, with_payload=True)
            for i in range(b)
        ]
        c = self._client
        resps = await self._call("query_batch_points", lambda: c.query_batch_points(self.collection, requests=requests))
        out: list[list[ScoredDoc]] = []
        for r in resps:
            docs = [ScoredDoc(self._remember(self.schema.doc_id(p.id, p.payload or {})), float(p.score),
                              dict(p.payload or {})) for p in r.points]
            out.append(sorted(docs, key=lambda d: (-d.score, d.doc_id)))  # ties as prime's own stores order them
        return out

    async def count(self) -> int:
        self._require_dim()
        c = self._client
        return int((await self._call("count", lambda: c.count(self.collection, exact=True))).count)

    async def _records(self, ids: Sequence[str], *, with_vectors: bool) -> list[tuple[str, Any]]:
        c = self._client
        points = [self.schema.point_id(d) for d in ids]
        payload: bool | list[str] = [self.schema.id_key] if self.schema.id_key else False
        recs = await self._call(
            "retrieve",
            lambda: c.retrieve(self.collection, ids=points, with_payload=payload,
                               with_vectors=[self.schema.vector_name] if with_vectors and self.schema.vector_name
                               else with_vectors),
        )
        return [(self._remember(self.schema.doc_id(r.id, r.payload or {})), r.vector) for r in recs]

    async def documents(self) -> list[Document]:
        """Every point as a prime :class:`~prime_retriever.Document` (id, title, text as the schema reads them)."""
        c = self._client
        out: list[Document] = []
        offset: Any = None
        # a large collection takes a while to read whole (progress only on a terminal)
        with tqdm(desc=f"reading {self.name}", unit="doc", mininterval=2.0, disable=None, leave=False) as bar:
            while True:
                page = functools.partial(c.scroll, self.collection, limit=_SCROLL_PAGE, offset=offset,
                                         with_payload=True, with_vectors=False)
                points, offset = await self._call("scroll", page)
                for p in points:
                    doc = self.schema.document(p.id, p.payload or {})
                    self._remember(doc.id)
                    out.append(doc)
                bar.update(len(points))
                if offset is None:
                    return out

    async def close(self) -> None:
        """Forget the store; the framework's client stays open (it is the framework's)."""
        self._closed = True
