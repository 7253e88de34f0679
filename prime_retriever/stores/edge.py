"""A :class:`~prime_retriever.stores.base.VectorStore` on Qdrant Edge (``qdrant-edge-py==0.9.0``).

Qdrant Edge runs Qdrant's Rust storage engine in-process: no server, data persisted to one
directory (reopening the directory gives the same data). Its Python API is synchronous and
beta, so :class:`EdgeStore`:

* runs every engine call on one dedicated worker thread (a single-thread executor), so the
  engine is never entered concurrently. Version 0.9.0 does **not** release the GIL inside its
  calls, so a worker thread alone does not free the event loop: updates are therefore cut into
  short batches (the loop runs between them; each stalls it for a few tens of ms) and the long
  HNSW build of :meth:`EdgeStore.optimize` runs in a child process;
* translates simple ``qdrant_client.models.Filter`` objects into edge filters (see
  :func:`to_edge_filter`) and raises :class:`~prime_retriever.errors.StoreError` for the rest;
* builds the HNSW index only when :meth:`EdgeStore.optimize` is called. **Call it once at the
  end of every bulk load** (the indexer's last step, after the final :meth:`EdgeStore.upsert`).
  Searches before that are still exact (brute-force over the unindexed segments), only slower.

Install with ``pip install 'prime-retriever[edge]'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import qdrant_edge as qe
from qdrant_client import models

from prime_retriever.errors import StoreError
from prime_retriever.stores.base import (
    DOC_ID_KEY,
    HYBRID_PREFETCH,
    META_POINT_ID,
    RRF_K,
    SPARSE_VECTOR_NAME,
    ScoredDoc,
    StoreBase,
    StoreMeta,
    as_matrix,
    as_query_vector,
    check_doc_ids,
    check_k,
    per_row,
    point_id,
    ranked,
)
from prime_retriever.stores.edge_filter import to_edge_filter
from prime_retriever.text.bm25 import SparseVector
from prime_retriever.text.documents import SCOPE_KEY

__all__ = ["EdgeStore", "to_edge_filter"]

_T = TypeVar("_T")

#: What the engine writes into a shard's directory; the only entries this store ever removes.
_SHARD_ENTRIES = ("edge_config.json", "wal", "segments")

#: Body of the child process of :meth:`EdgeStore.optimize`: open, optimize, flush, close.
_OPTIMIZE_CHILD = """
import sys
import qdrant_edge
shard = qdrant_edge.EdgeShard.load(sys.argv[1])
changed = shard.optimize()
shard.flush()
shard.close()
print(changed)
"""


class EdgeStore(StoreBase):
    """Documents in a Qdrant Edge shard persisted under ``path``, searched by cosine similarity.

    Args:
        path: Shard directory (created on first :meth:`ensure_collection`).
        upsert_batch_size: Points per engine update call; each call holds the GIL, the loop runs
            between calls.
        hnsw_ef: HNSW search beam width (``None``: engine default).
        hnsw_config: HNSW build parameters for a *new* shard (``None``: engine defaults).
        optimizers: Optimizer settings for a *new* shard, e.g. a lower ``indexing_threshold``.
        max_search_threads: Engine search threads (``None``: derived from the CPU count).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        upsert_batch_size: int = 256,
        hnsw_ef: int | None = None,
        hnsw_config: qe.HnswIndexConfig | None = None,
        optimizers: qe.EdgeOptimizersConfig | None = None,
        max_search_threads: int | None = None,
    ) -> None:
        if upsert_batch_size <= 0:
            raise StoreError("EdgeStore: upsert_batch_size must be positive")
        self.path = Path(path)
        self.name = f"qdrant-edge({self.path})"
        self._batch = upsert_batch_size
        self._params = qe.SearchParams(hnsw_ef=hnsw_ef) if hnsw_ef is not None else None
        self._hnsw_config = hnsw_config
        self._optimizers = optimizers
        self._max_search_threads = max_search_threads
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qdrant-edge")
        self._shard: qe.EdgeShard | None = None
        self._dim: int | None = None
        self._meta: StoreMeta | None = None  # what the open shard records
        self._closed = False
        self.optimize_pid: int | None = None  # the child process of the last optimize(), for monitoring
        self._open_lock = asyncio.Lock()
        self._orphan: qe.EdgeShard | None = None  # opened on the worker thread, not yet adopted

    # -- plumbing ----------------------------------------------------------------------------------

    async def _run(self, what: str, fn: Callable[[], _T]) -> _T:
        """Run blocking ``fn`` on the store's worker thread; engine errors become :class:`StoreError`."""
        if self._closed:
            raise StoreError(f"{self.name}: store is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn)
        except StoreError:
            raise
        except Exception as exc:
            if "WouldBlock" in str(exc):  # the engine's file lock: "Can't init WAL: Kind(WouldBlock)"
                raise StoreError(
                    f"{self.name}: another process holds the store at {self.path} (Qdrant Edge locks a shard "
                    "while it is open); close it there first"
                ) from exc
            raise StoreError(f"{self.name}: {what} failed: {exc}") from exc

    def _require_dim(self) -> int:
        return self._require()[1]

    def _require(self) -> tuple[qe.EdgeShard, int]:
        if self._closed:
            raise StoreError(f"{self.name}: store is closed")
        if self._shard is None or self._dim is None:
            raise StoreError(f"{self.name}: call ensure_collection(dim, encoder_name) first")
        return self._shard, self._dim

    def _filter(self, user: models.Filter | None, exclude_ids: Sequence[str]) -> qe.Filter:
        """The user's filter AND NOT the metadata point AND NOT any of ``exclude_ids``."""
        must_not: list[Any] = [qe.HasIdCondition({META_POINT_ID})]
        exclude_ids = check_doc_ids(exclude_ids, self.name, "exclude_ids")
        if exclude_ids:
            must_not.append(qe.FieldCondition(key=DOC_ID_KEY, match=qe.MatchAny(list(exclude_ids))))
        try:
            must: list[Any] | None = None if user is None else [to_edge_filter(user)]
        except StoreError as exc:
            raise StoreError(f"{self.name}: {exc}") from exc
        return qe.Filter(must=must, must_not=must_not)

    def _request(self, q: npt.NDArray[np.float32], k: int, flt: qe.Filter, sparse: SparseVector | None = None
                 ) -> qe.QueryRequest:
        """A dense query, or with ``sparse`` a hybrid one: the dense and the BM25 nearest prefetched under
        ``flt`` and fused by RRF in the engine (the constant Qdrant local mode and servers use)."""
        k = check_k(k, self.name)
        if sparse is None:
            return qe.QueryRequest(limit=k, query=qe.Query.Nearest(q.tolist()), filter=flt, with_payload=True,
                                   with_vector=False, params=self._params)
        depth = max(k, HYBRID_PREFETCH)
        prefetches = [qe.Prefetch(limit=depth, query=qe.Query.Nearest(q.tolist()), filter=flt, params=self._params)]
        if sparse.indices:  # a query of stop words only has no sparse half
            sv = qe.SparseVector(list(sparse.indices), list(sparse.values))
            sparse_query = qe.Query.Nearest(sv, using=SPARSE_VECTOR_NAME)
            prefetches.append(qe.Prefetch(limit=depth, query=sparse_query, filter=flt))
        fusion: Any = qe.Fusion.Rrf(k=RRF_K)  # the stub types Fusion's nested classes as not a Fusion
        return qe.QueryRequest(limit=k, prefetches=prefetches, query=fusion, with_payload=True, with_vector=False)

    @property
    def _hybrid(self) -> bool:
        return self._meta is not None and self._meta.sparse

    @staticmethod
    def _hits(points: Sequence[qe.ScoredPoint]) -> list[ScoredDoc]:
        out: list[ScoredDoc] = []
        for p in points:
            payload = dict(p.payload or {})
            out.append(ScoredDoc(doc_id=str(payload.get(DOC_ID_KEY, p.id)), score=p.score, payload=payload))
        return ranked(out)

    # -- engine-thread bodies ----------------------------------------------------------------------

    def _open_or_create(self, want: StoreMeta) -> tuple[qe.EdgeShard, StoreMeta]:
        """Load the shard at ``path`` (with the metadata it records), or create one where nothing is yet.

        Only the shard's own entries (:data:`_SHARD_ENTRIES`) are ever written or removed: a
        folder that holds other files and no shard is refused before the engine touches it (its
        ``load`` would leave a stray ``segments/`` folder there), and an empty shard whose
        creation was cut off is recreated without touching the files beside it.
        """
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(f"{self.name}: cannot create a shard at {self.path}: it is a file, not a directory")
        entries = {e.name for e in self.path.iterdir()} if self.path.is_dir() else set()
        if "edge_config.json" not in entries:
            if entries:
                raise StoreError(
                    f"{self.name}: {self.path} is not a Qdrant Edge shard (no edge_config.json) and holds "
                    f"other files ({', '.join(sorted(entries)[:5])}); point the store at a new or empty directory"
                )
            return self._create(want), want
        shard = qe.EdgeShard.load(str(self.path))
        recs = shard.retrieve([META_POINT_ID], with_payload=True, with_vector=False)
        if not recs:
            empty = shard.count(qe.CountRequest(exact=True)) == 0
            shard.close()
            if not empty:
                raise StoreError(
                    f"{self.name}: shard exists but has no prime_retriever metadata point, so the encoder "
                    f"that built it is unknown (wanted {want.encoder_name!r}, dim {want.dim})"
                )
            # an empty shard whose creation was cut off before its metadata: nothing to lose, start over
            self._remove_shard_entries()
            return self._create(want), want
        try:
            recorded = StoreMeta.from_payload(recs[0].payload, self.name)
            recorded.check(want, self.name)
        except StoreError:
            shard.close()
            raise
        return shard, recorded

    def _remove_shard_entries(self) -> None:
        """Remove what the engine writes into ``path`` (never anything else there)."""
        for name in _SHARD_ENTRIES:
            entry = self.path / name
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            elif entry.exists() or entry.is_symlink():
                entry.unlink(missing_ok=True)

    def _create(self, want: StoreMeta) -> qe.EdgeShard:
        config = qe.EdgeConfig(
            vectors=qe.EdgeVectorParams(size=want.dim, distance=qe.Distance.Cosine),
            sparse_vectors={SPARSE_VECTOR_NAME: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)}
            if want.sparse else None,
            hnsw_config=self._hnsw_config,
            optimizers=self._optimizers,
            max_search_threads=self._max_search_threads,
        )
        made_dir = not self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{self.name}: cannot create the shard directory {self.path}: {exc}") from exc
        try:
            shard = qe.EdgeShard.create(str(self.path), config)
        except BaseException:
            self._forget_partial_shard(made_dir)
            raise
        marker = [0.0] * want.dim  # (D,) any non-zero vector; the point is never searched
        marker[0] = 1.0
        try:
            shard.update(
                qe.UpdateOperation.upsert_points([qe.Point(id=META_POINT_ID, vector=marker,
                                                           payload=want.to_payload())])
            )
            for key in (DOC_ID_KEY, SCOPE_KEY):
                shard.update(qe.UpdateOperation.create_field_index(key, qe.PayloadSchemaType.Keyword))
            shard.flush()
        except BaseException:  # no half-made shard is left behind to be refused later
            shard.close()
            self._forget_partial_shard(made_dir)
            raise
        return shard

    def _forget_partial_shard(self, made_dir: bool) -> None:
        """Undo a failed :meth:`_create`: the shard's entries, and the directory only if it made it."""
        self._remove_shard_entries()
        if made_dir:
            with contextlib.suppress(OSError):
                self.path.rmdir()  # only if empty: nothing else can have been put there meanwhile

    @staticmethod
    def _upsert_batch(
        shard: qe.EdgeShard,
        ids: Sequence[str],
        mat: npt.NDArray[np.float32],
        payloads: Sequence[Mapping[str, Any]],
        sparse: Sequence[SparseVector] | None,
    ) -> None:
        # mat: (b, D)
        rows = mat.tolist()
        vectors: list[Any] = rows if sparse is None else [
            {"": rows[i], SPARSE_VECTOR_NAME: qe.SparseVector(list(sv.indices), list(sv.values))}
            for i, sv in enumerate(sparse)
        ]
        points = [
            qe.Point(id=point_id(d), vector=vectors[i], payload={**payloads[i], DOC_ID_KEY: d})
            for i, d in enumerate(ids)
        ]
        shard.update(qe.UpdateOperation.upsert_points(points))

    # -- VectorStore -------------------------------------------------------------------------------

    async def ensure_collection(self, dim: int, encoder_name: str, *, sparse: bool = False) -> None:
        """Open the shard at ``path`` and verify its encoder, or create it (cosine, ``dim``; with
        ``sparse`` also a BM25 sparse vector under the IDF modifier).

        Raises:
            StoreError: the existing shard records another encoder name, dimension or ``sparse``,
                or is not a prime_retriever shard.
        """
        if dim <= 0:
            raise StoreError(f"{self.name}: dim must be positive, got {dim}")
        want = StoreMeta(encoder_name=encoder_name, dim=dim, sparse=sparse)
        async with self._open_lock:  # concurrent callers: one opens, the others verify
            if self._shard is not None and self._meta is not None:
                self._meta.check(want, self.name)  # already open: only verify
                return
            shard, recorded = await self._run("open/create shard", functools.partial(self._open_adoptable, want))
            self._orphan = None  # adopted
            self._shard = shard
            self._dim = dim
            self._meta = recorded  # what the shard records (a hybrid one may be opened for dense search)

    def _open_adoptable(self, want: StoreMeta) -> tuple[qe.EdgeShard, StoreMeta]:
        """:meth:`_open_or_create` on the worker thread, first closing a shard that an earlier, cancelled
        open (e.g. a timed-out ``ensure_collection``) loaded after its caller had gone, so two handles
        never hold the directory at once."""
        if self._orphan is not None:
            orphan, self._orphan = self._orphan, None
            orphan.close()
        shard, recorded = self._open_or_create(want)
        self._orphan = shard  # until ensure_collection adopts it
        return shard, recorded

    async def upsert(
        self,
        ids: Sequence[str],
        vectors: npt.ArrayLike,
        payloads: Sequence[Mapping[str, Any]],
        *,
        sparse: Sequence[SparseVector] | None = None,
    ) -> None:
        """Insert or overwrite documents, one engine call per ``upsert_batch_size`` rows.

        ``vectors``: (n, D). The payload stored is ``{**payloads[i], "doc_id": ids[i]}``. ``sparse``:
        the documents' BM25 vectors, for (and only for) a shard created with ``sparse``. After a
        bulk load, call :meth:`optimize` to build the HNSW index.
        """
        shard, dim = self._require()
        ids = check_doc_ids(ids, self.name)
        if len(payloads) != len(ids):
            raise StoreError(f"{self.name}: got {len(payloads)} payloads for {len(ids)} ids")
        mat = as_matrix(vectors, len(ids), dim, self.name)  # (n, D)
        bm25 = self._doc_sparse(sparse, len(ids), self._hybrid)
        for start in range(0, len(ids), self._batch):
            stop = min(start + self._batch, len(ids))
            await self._run(
                "upsert",
                functools.partial(self._upsert_batch, shard, ids[start:stop], mat[start:stop], payloads[start:stop],
                                  None if bm25 is None else bm25[start:stop]),
            )

    async def optimize(self, *, in_subprocess: bool = True) -> bool:
        """Run the engine's optimizers (builds the HNSW index, merges segments) and flush to disk.

        Call once at the end of every bulk load (after the last :meth:`upsert`).

        ``qdrant-edge-py`` 0.9.0 holds the GIL inside every engine call, so a long call stalls
        *all* Python threads, the event loop included, even from a worker thread (building HNSW
        on 20k vectors takes tens of seconds). With ``in_subprocess=True`` (the default) the shard
        is therefore flushed and closed here, optimized by a child Python process that opens the
        same directory, and reopened afterwards: the event loop keeps running throughout. Pass
        ``in_subprocess=False`` to optimize in the worker thread (faster for tiny shards).
        Returns ``True`` if any segment was optimized. Cancelling the call kills the child and
        reopens the shard before the cancellation propagates, so no second writer is left behind.
        """
        shard, _ = self._require()
        if not in_subprocess:

            def body() -> bool:
                changed = shard.optimize()
                shard.flush()
                return changed

            return await self._run("optimize", body)

        def release() -> None:
            shard.flush()
            shard.close()

        await self._run("close before optimize", release)
        self._shard = None
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _OPTIMIZE_CHILD,
                str(self.path),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            self.optimize_pid = proc.pid
            try:
                out, err = await proc.communicate()
            except BaseException:  # cancelled (a timeout, Ctrl-C): the child must not outlive us on the shard
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
                raise
        finally:
            self._shard = await self._run("reopen after optimize", functools.partial(qe.EdgeShard.load, str(self.path)))
        if proc.returncode != 0:
            raise StoreError(
                f"{self.name}: optimize subprocess failed (exit {proc.returncode}): "
                f"{err.decode('utf-8', 'replace')[-500:]}"
            )
        return out.decode().strip().endswith("True")

    async def flush(self) -> None:
        """Persist pending changes to disk."""
        shard, _ = self._require()
        await self._run("flush", shard.flush)

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
        shard, dim = self._require()
        q = as_query_vector(vector, dim, self.name)  # (D,)
        req = self._request(q, k, self._filter(filter, exclude_ids), self._query_sparse([sparse], 1, self._hybrid)[0])
        return self._hits(await self._run("query", functools.partial(shard.query, req)))

    async def search_batch(
        self,
        vectors: npt.ArrayLike,
        k: int,
        filters: Sequence[models.Filter | None] | None = None,
        exclude_ids: Sequence[Sequence[str]] | None = None,
        *,
        sparse: Sequence[SparseVector | None] | None = None,
    ) -> list[list[ScoredDoc]]:
        """One :meth:`search` per row of ``vectors`` (B, D), run as one planned engine batch."""
        shard, dim = self._require()
        mat = as_matrix(vectors, None, dim, self.name)  # (B, D)
        b = mat.shape[0]
        flts = per_row(filters, b, "filters", self.name, None)
        excl = per_row(exclude_ids, b, "exclude_ids rows", self.name, ())
        rows = self._query_sparse(sparse, b, self._hybrid)
        if b == 0:
            return []
        batch = qe.QueryBatchRequest(
            [self._request(mat[i], k, self._filter(flts[i], excl[i]), rows[i]) for i in range(b)]
        )
        results = await self._run("query_batch", functools.partial(shard.query_batch, batch))
        return [self._hits(r) for r in results]

    async def count(self) -> int:
        """Exact number of documents (the metadata point excluded)."""
        shard, _ = self._require()
        req = qe.CountRequest(exact=True, filter=self._filter(None, ()))
        return await self._run("count", functools.partial(shard.count, req))

    async def _records(self, ids: Sequence[str], *, with_vectors: bool) -> list[tuple[str, Any]]:
        shard, _ = self._require()
        points: list[qe.PointId] = [point_id(d) for d in ids]
        recs = await self._run("retrieve", functools.partial(shard.retrieve, points, with_payload=True,
                                                              with_vector=with_vectors))
        return [(str((r.payload or {}).get(DOC_ID_KEY)), r.vector) for r in recs]

    async def close(self) -> None:
        """Flush and close the shard and stop the worker thread (idempotent)."""
        if self._closed:
            return
        shard, self._shard = self._shard, None

        def body() -> None:  # on the worker thread: after any open still running there
            if shard is not None:
                shard.flush()
                shard.close()
            if self._orphan is not None:  # opened for a caller that was cancelled meanwhile
                orphan, self._orphan = self._orphan, None
                orphan.close()

        try:
            await self._run("close", body)
        finally:
            self._closed = True
            self._executor.shutdown(wait=True)
