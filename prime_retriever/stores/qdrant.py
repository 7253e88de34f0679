"""A :class:`~prime_retriever.stores.base.VectorStore` on ``qdrant_client.AsyncQdrantClient``.

One class covers the three deployments the client supports:

* embedded local mode: ``QdrantStore(location=":memory:")`` or ``QdrantStore(path="/dir")``
  (pure-Python, exact brute-force search; fine up to ~100k points, blocks the event loop while
  it computes, because the client's local mode is synchronous code behind ``async def``);
* a Qdrant server or cluster: ``QdrantStore(url="http://host:6333", api_key=...)``, optionally
  with ``shard_number``/``replication_factor`` for a distributed collection;
* any client you already built: ``QdrantStore(client=my_async_client)`` (not closed by us).

Transport failures (refused connection, timeout, 5xx/429 answers, rate limiting, gRPC statuses
such as UNAVAILABLE or DEADLINE_EXCEEDED) are raised as
:class:`~prime_retriever.stores.base.StoreUnavailableError` so callers can retry with a bound; a request's
own fault (HTTP 4xx, gRPC INVALID_ARGUMENT, NOT_FOUND, ...) is a permanent
:class:`~prime_retriever.errors.StoreError`. This class never retries by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import httpx
import numpy as np
import numpy.typing as npt
from qdrant_client import AsyncQdrantClient, models
from qdrant_client.common.client_exceptions import ResourceExhaustedResponse
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from prime_retriever.errors import StoreError
from prime_retriever.stores.base import (
    DOC_ID_KEY,
    HYBRID_PREFETCH,
    META_POINT_ID,
    SPARSE_VECTOR_NAME,
    ScoredDoc,
    StoreBase,
    StoreMeta,
    StoreUnavailableError,
    as_matrix,
    as_query_vector,
    check_doc_ids,
    check_k,
    per_row,
    point_id,
    ranked,
)
from prime_retriever.text.bm25 import SparseVector
from prime_retriever.text.documents import SCOPE_KEY

__all__ = ["QdrantStore"]

_T = TypeVar("_T")

#: HTTP statuses that mean "the backend is (temporarily) not able to serve": retryable.
_UNAVAILABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
#: How often ensure_collection looks again for the metadata point of a collection being created.
_METADATA_POLL_S = 0.1
#: Up to this many exclude_ids are dropped from over-fetched results instead of filtered server-side.
_MAX_POST_FILTERED_EXCLUSIONS = 32


#: gRPC status codes that mean "not now" (retryable); every other code is the request's own fault.
_UNAVAILABLE_GRPC_CODES = frozenset(
    {"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED", "INTERNAL", "UNKNOWN", "CANCELLED"}
)


def _grpc_error_types() -> tuple[type[BaseException], ...]:
    try:
        import grpc
    except ImportError:  # pragma: no cover - grpcio is a qdrant-client dependency
        return ()
    return (grpc.RpcError,)


_GRPC_ERRORS = _grpc_error_types()
_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    ResponseHandlingException,
    httpx.TransportError,
    ConnectionError,
    TimeoutError,
)


def _translate(exc: BaseException, store_name: str, what: str) -> StoreError:
    """Map a client exception to :class:`StoreUnavailableError` (transient) or :class:`StoreError`."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, ResourceExhaustedResponse):  # HTTP 429 / gRPC RESOURCE_EXHAUSTED with Retry-After
        return StoreUnavailableError(
            f"{store_name}: {what} rate-limited (retry after {exc.retry_after_s} s): {exc}"
        )
    if isinstance(exc, _GRPC_ERRORS):
        code_fn = getattr(exc, "code", None)
        code = getattr(code_fn(), "name", None) if callable(code_fn) else None
        details_fn = getattr(exc, "details", None)
        detail = details_fn() if callable(details_fn) else repr(exc)
        msg = f"{store_name}: {what} failed with gRPC {code or 'error'}: {detail}"
        if code is None or code in _UNAVAILABLE_GRPC_CODES:
            return StoreUnavailableError(msg)
        return StoreError(msg)
    if isinstance(exc, UnexpectedResponse):
        status = exc.status_code
        detail = exc.content.decode("utf-8", "replace")[:300] if exc.content else exc.reason_phrase
        msg = f"{store_name}: {what} failed with HTTP {status}: {detail}"
        if status is None or status in _UNAVAILABLE_STATUSES:
            return StoreUnavailableError(msg)
        return StoreError(msg)
    if isinstance(exc, _TRANSPORT_ERRORS):
        source = exc.source if isinstance(exc, ResponseHandlingException) else exc
        return StoreUnavailableError(f"{store_name}: {what} failed, backend unreachable: {source!r}")
    return StoreError(f"{store_name}: {what} failed: {exc!r}")


class QdrantStore(StoreBase):
    """Documents in one Qdrant collection, searched by cosine similarity.

    Args:
        collection: Collection name.
        client: A ready ``AsyncQdrantClient``; when given, ``url``/``location``/``path`` must be
            ``None`` and the client is *not* closed by :meth:`close`.
        url: Server/cluster URL, e.g. ``"http://localhost:6333"``.
        api_key: API key for a secured server/cluster.
        location: ``":memory:"`` for an in-memory embedded store.
        path: Directory of a persistent embedded store.
        timeout: Client timeout in seconds for every request (a hanging server fails after it).
        prefer_grpc: Talk gRPC (on ``grpc_port``) instead of REST to a server.
        grpc_port: The server's gRPC port.
        shard_number: Shards of a newly created collection (cluster deployments).
        replication_factor: Replicas of each shard of a newly created collection.
        upsert_batch_size: Points per upsert request.
    """

    def __init__(
        self,
        collection: str = "prime_docs",
        *,
        client: AsyncQdrantClient | None = None,
        url: str | None = None,
        api_key: str | None = None,
        location: str | None = None,
        path: str | None = None,
        timeout: float = 10.0,
        prefer_grpc: bool = False,
        grpc_port: int = 6334,
        shard_number: int | None = None,
        replication_factor: int | None = None,
        upsert_batch_size: int = 256,
    ) -> None:
        given = [x for x in (client, url, location, path) if x is not None]
        if len(given) != 1:
            raise StoreError("QdrantStore: pass exactly one of client=, url=, location=, path=")
        if timeout <= 0 or upsert_batch_size <= 0:
            raise StoreError("QdrantStore: timeout and upsert_batch_size must be positive")
        self.collection = collection
        self._owns_client = client is None
        self._local = location is not None or path is not None
        if client is not None:
            self._client = client
            self._local = type(getattr(client, "_client", None)).__name__ == "AsyncQdrantLocal"
            self.name = f"qdrant-client({'local' if self._local else 'remote'})/{collection}"
        elif url is not None:
            self._client = AsyncQdrantClient(
                url=url,
                api_key=api_key,
                timeout=math.ceil(timeout),
                prefer_grpc=prefer_grpc,
                grpc_port=grpc_port,
                check_compatibility=False,
            )
            self.name = f"qdrant-server({url})/{collection}"
        else:
            try:
                self._client = AsyncQdrantClient(location=location, path=path)
            except RuntimeError as exc:  # the folder is locked by another client (local mode is single-process)
                raise StoreError(f"qdrant-local({path}): another process holds the store ({exc})") from exc
            except OSError as exc:  # unwritable, read-only, or a file where the folder should be
                raise StoreError(f"qdrant-local({path}): cannot open or create the store there: {exc}") from exc
            self.name = f"qdrant-local({location if location is not None else path})/{collection}"
        #: How long ensure_collection waits for the metadata point of a collection another process
        #: has just created, before it calls the collection foreign.
        self.metadata_wait_s = 5.0
        self._shard_number = shard_number
        self._replication_factor = replication_factor
        self._batch = upsert_batch_size
        self._dim: int | None = None
        self._sparse = False  # whether the open collection holds BM25 vectors
        self._closed = False

    # -- plumbing ----------------------------------------------------------------------------------

    async def _call(self, what: str, fn: Callable[[], Awaitable[_T]]) -> _T:
        """Await ``fn()`` translating client exceptions into typed store errors."""
        if self._closed:
            raise StoreError(f"{self.name}: store is closed")
        try:
            return await fn()
        except StoreError:
            raise
        except Exception as exc:
            raise _translate(exc, self.name, what) from exc

    def _require_dim(self) -> int:
        if self._closed:
            raise StoreError(f"{self.name}: store is closed")
        if self._dim is None:
            raise StoreError(f"{self.name}: call ensure_collection(dim, encoder_name) first")
        return self._dim

    def _filter(self, user: models.Filter | None, exclude_ids: Sequence[str]) -> models.Filter:
        """The user's filter AND NOT the metadata point AND NOT any of ``exclude_ids``."""
        if user is not None and not isinstance(user, models.Filter):
            raise StoreError(f"{self.name}: filter must be a qdrant_client.models.Filter, got {type(user)}")
        must_not: list[models.Condition] = [models.HasIdCondition(has_id=[META_POINT_ID])]
        if exclude_ids:
            must_not.append(models.FieldCondition(key=DOC_ID_KEY, match=models.MatchAny(any=list(exclude_ids))))
        return models.Filter(must=[user] if user is not None else None, must_not=must_not)

    def _plan(self, user: models.Filter | None, exclude_ids: Sequence[str], k: int) -> tuple[models.Filter | None, int]:
        """The (filter, limit) to send for a top-``k`` query.

        Without a user filter and with few exclusions, no filter is sent: the query over-fetches
        ``k + 1 + len(exclude_ids)`` hits and :meth:`_hits` drops the metadata point and the
        excluded ids afterwards (exact, and far cheaper in local mode, whose filters are
        evaluated point by point in Python). Otherwise the exclusions go into the filter.
        """
        if user is None and len(exclude_ids) <= _MAX_POST_FILTERED_EXCLUSIONS:
            return None, k + 1 + len(exclude_ids)
        return self._filter(user, exclude_ids), k

    def _request(
        self, q: npt.NDArray[np.float32], k: int, user: models.Filter | None, exclude_ids: Sequence[str],
        sparse: SparseVector | None,
    ) -> models.QueryRequest:
        """The query for one row: dense (planned by :meth:`_plan`), or with ``sparse`` a hybrid one, the
        dense and the BM25 nearest prefetched under the full filter and fused by RRF in the store
        (``FusionQuery``, whose constant is :data:`~prime_retriever.stores.base.RRF_K` on every server
        version that has the Query API)."""
        if sparse is None:
            flt, limit = self._plan(user, exclude_ids, k)
            return models.QueryRequest(query=q.tolist(), filter=flt, limit=limit, with_payload=True)
        flt = self._filter(user, exclude_ids)
        depth = max(k, HYBRID_PREFETCH)
        prefetch = [models.Prefetch(query=q.tolist(), filter=flt, limit=depth)]
        if sparse.indices:  # a query of stop words only has no sparse half
            sv = models.SparseVector(indices=list(sparse.indices), values=list(sparse.values))
            prefetch.append(models.Prefetch(query=sv, using=SPARSE_VECTOR_NAME, filter=flt, limit=depth))
        return models.QueryRequest(prefetch=prefetch, query=models.FusionQuery(fusion=models.Fusion.RRF), limit=k,
                                   with_payload=True)

    @staticmethod
    def _hits(points: Sequence[models.ScoredPoint], k: int, exclude_ids: Sequence[str]) -> list[ScoredDoc]:
        skip = set(exclude_ids)
        out: list[ScoredDoc] = []
        for p in points:
            payload = dict(p.payload or {})
            if str(p.id) == META_POINT_ID:
                continue
            doc_id = str(payload.get(DOC_ID_KEY, p.id))
            if doc_id in skip:
                continue
            out.append(ScoredDoc(doc_id=doc_id, score=p.score, payload=payload))
        return ranked(out)[:k]

    # -- VectorStore -------------------------------------------------------------------------------

    async def ensure_collection(self, dim: int, encoder_name: str, *, sparse: bool = False) -> None:
        """Create the collection (cosine, ``dim``; with ``sparse`` also a BM25 sparse vector under Qdrant's
        IDF modifier) with its metadata point, or verify an existing one.

        An existing collection without a metadata point may be one another process is creating at
        this moment: its metadata is awaited for up to :attr:`metadata_wait_s` seconds. After that an
        *empty* one of the right dimension (a creation cut off before its metadata was written) is
        adopted; one holding points is refused.

        Raises:
            StoreError: the existing collection records another encoder name, dimension or
                ``sparse``, or was not created by prime_retriever (no metadata point).
            StoreUnavailableError: the backend is unreachable.
        """
        if dim <= 0:
            raise StoreError(f"{self.name}: dim must be positive, got {dim}")
        want = StoreMeta(encoder_name=encoder_name, dim=dim, sparse=sparse)
        sparse_config = {SPARSE_VECTOR_NAME: models.SparseVectorParams(modifier=models.Modifier.IDF)} \
            if sparse else None
        c = self._client
        exists = await self._call("collection_exists", lambda: c.collection_exists(self.collection))
        if not exists:
            created = True
            try:
                await self._call(
                    "create_collection",
                    lambda: c.create_collection(
                        self.collection,
                        vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE),
                        sparse_vectors_config=sparse_config,
                        shard_number=self._shard_number,
                        replication_factor=self._replication_factor,
                    ),
                )
            except StoreUnavailableError:
                raise
            except StoreError:
                # Lost a creation race with another process (HTTP 409): verify theirs below.
                if not await self._call("collection_exists", lambda: c.collection_exists(self.collection)):
                    raise
                created = False
            if created:  # the metadata first: another process waits for it (below), not for the indexes
                await self._write_metadata(want)
                if not self._local:  # local mode ignores payload indexes (and warns)
                    for key in (DOC_ID_KEY, SCOPE_KEY):
                        await self._call(
                            "create_payload_index",
                            functools.partial(
                                c.create_payload_index, self.collection, key, models.PayloadSchemaType.KEYWORD,
                                wait=True,
                            ),
                        )
        waited = 0.0
        while True:
            recs = await self._call(
                "retrieve metadata",
                lambda: c.retrieve(self.collection, ids=[META_POINT_ID], with_payload=True, with_vectors=False),
            )
            if recs or waited >= self.metadata_wait_s:
                break
            await asyncio.sleep(_METADATA_POLL_S)  # another process may be creating it right now
            waited += _METADATA_POLL_S
        recorded = want
        if recs:
            recorded = StoreMeta.from_payload(recs[0].payload, self.name)
            recorded.check(want, self.name)
        elif not await self._adopt_empty(want):  # adopted: it now holds want's metadata
            raise StoreError(
                f"{self.name}: collection exists but has no prime_retriever metadata point, so the encoder "
                f"that built it is unknown (wanted {encoder_name!r}, dim {dim}); use another collection"
            )
        self._dim = dim
        self._sparse = recorded.sparse  # a hybrid collection opened for dense search still takes BM25 upserts only

    async def _write_metadata(self, want: StoreMeta) -> None:
        c = self._client
        marker = np.zeros(want.dim, dtype=np.float32)  # (D,) any non-zero vector; never searched
        marker[0] = 1.0
        meta_point = models.PointStruct(id=META_POINT_ID, vector=marker.tolist(), payload=want.to_payload())
        await self._call("upsert metadata", lambda: c.upsert(self.collection, points=[meta_point], wait=True))

    async def _adopt_empty(self, want: StoreMeta) -> bool:
        """Give an *empty* collection without metadata (one whose creation failed before its metadata
        point was written, e.g. on a dropped connection) the metadata of ``want``, if its vectors are
        ``want.dim``-d cosine. A collection holding any point is never adopted: its encoder is unknown."""
        c = self._client
        n = await self._call("count", lambda: c.count(self.collection, exact=True))
        if int(n.count) != 0:
            return False
        info = await self._call("get_collection", lambda: c.get_collection(self.collection))
        params = info.config.params.vectors
        if not isinstance(params, models.VectorParams) or params.size != want.dim \
                or params.distance != models.Distance.COSINE \
                or (SPARSE_VECTOR_NAME in (info.config.params.sparse_vectors or {})) != want.sparse:
            return False
        await self._write_metadata(want)
        return True

    async def upsert(
        self,
        ids: Sequence[str],
        vectors: npt.ArrayLike,
        payloads: Sequence[Mapping[str, Any]],
        *,
        sparse: Sequence[SparseVector] | None = None,
    ) -> None:
        """Insert or overwrite documents in batches of ``upsert_batch_size``.

        ``vectors``: (n, D). The payload stored is ``{**payloads[i], "doc_id": ids[i]}``. ``sparse``:
        the documents' BM25 vectors, for (and only for) a collection created with ``sparse``.
        """
        dim = self._require_dim()
        ids = check_doc_ids(ids, self.name)
        if len(payloads) != len(ids):
            raise StoreError(f"{self.name}: got {len(payloads)} payloads for {len(ids)} ids")
        mat = as_matrix(vectors, len(ids), dim, self.name)  # (n, D)
        bm25 = self._doc_sparse(sparse, len(ids), self._sparse)
        c = self._client
        for start in range(0, len(ids), self._batch):
            stop = min(start + self._batch, len(ids))
            rows = mat[start:stop].tolist()  # (b, D)
            batch: models.Batch | list[models.PointStruct]
            if bm25 is None:
                batch = models.Batch(
                    ids=[point_id(d) for d in ids[start:stop]],
                    vectors=rows,
                    payloads=[{**payloads[i], DOC_ID_KEY: ids[i]} for i in range(start, stop)],
                )
            else:
                batch = [
                    models.PointStruct(
                        id=point_id(ids[i]),
                        vector={"": rows[i - start], SPARSE_VECTOR_NAME: models.SparseVector(
                            indices=list(bm25[i].indices), values=list(bm25[i].values))},
                        payload={**payloads[i], DOC_ID_KEY: ids[i]},
                    )
                    for i in range(start, stop)
                ]
            await self._call("upsert", functools.partial(c.upsert, self.collection, points=batch, wait=True))

    async def search(
        self,
        vector: npt.ArrayLike,
        k: int,
        filter: models.Filter | None = None,
        exclude_ids: Sequence[str] = (),
        *,
        sparse: SparseVector | None = None,
    ) -> list[ScoredDoc]:
        """The ``k`` nearest documents to ``vector`` (D,), best first (hybrid with ``sparse``)."""
        dim = self._require_dim()
        q = as_query_vector(vector, dim, self.name)  # (D,)
        k = check_k(k, self.name)
        exclude_ids = check_doc_ids(exclude_ids, self.name, "exclude_ids")
        req = self._request(q, k, filter, exclude_ids, self._query_sparse([sparse], 1, self._sparse)[0])
        c = self._client
        resp = await self._call(
            "query_points",
            lambda: c.query_points(self.collection, query=req.query, prefetch=req.prefetch, query_filter=req.filter,
                                   limit=req.limit or k, with_payload=True),
        )
        return self._hits(resp.points, k, exclude_ids)

    async def search_batch(
        self,
        vectors: npt.ArrayLike,
        k: int,
        filters: Sequence[models.Filter | None] | None = None,
        exclude_ids: Sequence[Sequence[str]] | None = None,
        *,
        sparse: Sequence[SparseVector | None] | None = None,
    ) -> list[list[ScoredDoc]]:
        """One :meth:`search` per row of ``vectors`` (B, D), sent as a single ``query_batch_points``."""
        dim = self._require_dim()
        mat = as_matrix(vectors, None, dim, self.name)  # (B, D)
        k = check_k(k, self.name)
        b = mat.shape[0]
        flts = per_row(filters, b, "filters", self.name, None)
        excl = [check_doc_ids(e, self.name, "exclude_ids")
                for e in per_row(exclude_ids, b, "exclude_ids rows", self.name, ())]
        sparse_rows = self._query_sparse(sparse, b, self._sparse)
        if b == 0:
            return []
        requests = [self._request(mat[i], k, flts[i], excl[i], sparse_rows[i]) for i in range(b)]
        c = self._client
        resps = await self._call("query_batch_points", lambda: c.query_batch_points(self.collection, requests=requests))
        return [self._hits(r.points, k, excl[i]) for i, r in enumerate(resps)]

    async def count(self) -> int:
        """Exact number of documents (the metadata point excluded)."""
        self._require_dim()
        c = self._client
        res = await self._call(
            "count",
            lambda: c.count(self.collection, count_filter=self._filter(None, ()), exact=True),
        )
        return int(res.count)

    async def _records(self, ids: Sequence[str], *, with_vectors: bool) -> list[tuple[str, Any]]:
        c = self._client
        recs = await self._call(
            "retrieve",
            functools.partial(c.retrieve, self.collection, ids=[point_id(d) for d in ids], with_payload=[DOC_ID_KEY],
                              with_vectors=with_vectors),
        )
        return [(str((r.payload or {}).get(DOC_ID_KEY)), r.vector) for r in recs]

    async def close(self) -> None:
        """Close the client if this store created it (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._owns_client:
            with contextlib.suppress(Exception):
                await self._client.close()
