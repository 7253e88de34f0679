"""Indexing: encode a corpus with the Y-Encoder and upsert it into a vector store.

* Point ids are deterministic (``uuid5`` of the doc id, see :func:`prime_retriever.stores.base.point_id`),
  so re-running never duplicates a document.
* Resumable: ids already in the store (``existing_ids``) are skipped, so after an interruption a
  re-run encodes and upserts only the rest.
* The store's ``ensure_collection`` records the encoder's name and dimension; indexing with
  another encoder raises :class:`~prime_retriever.errors.StoreError`.
* With ``bm25`` (hybrid search) each document also gets a BM25 sparse vector
  (:class:`~prime_retriever.text.bm25.Bm25Encoder`) in a collection created to hold them.
* Encoding runs on a worker thread, batch by batch, under a tqdm progress bar; with
  ``cache_dir`` the embeddings are cached on disk (:class:`~prime_retriever.text.embedding_cache.CachedEncoder`).

The command line is ``prime-retriever index`` (:mod:`prime_retriever.cli.index`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from prime_retriever.stores.retry import RetryPolicy, call_store
from prime_retriever.text.corpus import unique_documents
from prime_retriever.text.documents import Document

if TYPE_CHECKING:
    from prime_retriever.stores.base import VectorStore
    from prime_retriever.text.bm25 import Bm25Encoder
    from prime_retriever.text.encoders import TextEncoder

__all__ = ["IndexReport", "index_documents"]

#: ``on_batch(batch_number, documents_done_so_far)``, called after each upserted batch (from 1).
BatchCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class IndexReport:
    """What one indexing run did."""

    store: str
    encoder: str
    dim: int
    total: int  # unique documents in the corpus
    skipped_existing: int  # already in the store before this run
    indexed: int  # encoded and upserted by this run
    duplicates: int  # repeated ids in the corpus (first kept)
    batches: int
    count_after: int
    seconds: float


async def index_documents(
    store: VectorStore,
    documents: Iterable[Document],
    *,
    encoder: TextEncoder,
    batch_size: int = 256,
    encode_batch_size: int = 64,
    retry: RetryPolicy | None = None,
    progress: bool = True,
    on_batch: BatchCallback | None = None,
    optimize: bool = True,
    bm25: Bm25Encoder | None = None,
) -> IndexReport:
    """Encode ``documents`` with ``encoder`` and upsert the ones not yet in ``store``.

    Args:
        store: the target; its collection is created or verified for ``encoder`` first.
        documents: the corpus; repeated ids keep their first occurrence.
        encoder: the Y-Encoder (wrap it in a ``CachedEncoder`` to cache embeddings on disk).
        batch_size: documents encoded and upserted per step (the unit of resumption).
        encode_batch_size: the encoder's own batch size.
        retry: bounds on retries of each store call (default :class:`RetryPolicy`).
        progress: show a tqdm progress bar (on stderr).
        on_batch: called after each upserted batch with (batch number from 1, documents done).
        optimize: call the store's ``optimize()`` at the end if it has one (Qdrant Edge's HNSW build),
            also when nothing new was indexed (an interrupted run may have stopped before it); the
            build gets no per-call timeout.
        bm25: for hybrid search: the collection holds BM25 vectors of the same ``encoding_text``
            (created so, or verified to be).

    Raises:
        StoreError: the collection was built with another encoder or dimension, or with(out) BM25
            vectors where ``bm25`` is (not) given.
        RetrieverError: the store stayed unavailable after the bounded retries.
        EncoderError: the encoder failed.
    """
    from tqdm.auto import tqdm

    if batch_size < 1 or encode_batch_size < 1:
        raise ValueError("batch_size and encode_batch_size must be >= 1")
    policy = retry if retry is not None else RetryPolicy(timeout_s=600.0)
    t0 = time.perf_counter()
    docs, duplicates = unique_documents(documents)
    name, dim = encoder.name, encoder.dim
    hybrid = bm25 is not None
    await call_store(store.name, "ensure_collection", lambda: store.ensure_collection(dim, name, sparse=hybrid),
                     policy)
    ids = [d.id for d in docs]
    present = await call_store(store.name, "existing_ids", lambda: store.existing_ids(ids), policy)
    todo = [d for d in docs if d.id not in present]
    loop = asyncio.get_running_loop()
    batches = 0
    done = 0
    with tqdm(total=len(docs), initial=len(docs) - len(todo), desc=f"indexing into {store.name}", unit="doc",
              disable=not progress, file=sys.stderr) as bar:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            texts = [d.encoding_text for d in chunk]
            encode = functools.partial(encoder.encode, texts, batch_size=encode_batch_size, show_progress=False)
            vectors = np.asarray(await loop.run_in_executor(None, encode), dtype=np.float32)  # b × D
            chunk_ids = [d.id for d in chunk]
            payloads = [d.payload() for d in chunk]
            sparse = None if bm25 is None else await loop.run_in_executor(None, bm25.embed_documents, texts)
            upsert = functools.partial(store.upsert, chunk_ids, vectors, payloads, sparse=sparse)
            await call_store(store.name, "upsert", upsert, policy)
            batches += 1
            done += len(chunk)
            bar.update(len(chunk))
            if on_batch is not None:
                on_batch(batches, done)
    opt = getattr(store, "optimize", None)
    if optimize and callable(opt):  # a resumed run too: the interrupted one may have stopped before it
        # an index build takes as long as it takes: no per-call timeout, and a killed build is not retried
        await call_store(store.name, "optimize", opt, dataclasses.replace(policy, timeout_s=None, attempts=1))
    count = await call_store(store.name, "count", store.count, policy)
    return IndexReport(
        store=store.name, encoder=name, dim=dim, total=len(docs), skipped_existing=len(docs) - len(todo),
        indexed=done, duplicates=duplicates, batches=batches, count_after=count,
        seconds=time.perf_counter() - t0,
    )
