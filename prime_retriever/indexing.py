"""Indexing: encode a corpus with the Y-Encoder and upsert it into a vector store.

* Point ids are deterministic (``uuid5`` of the doc id, see :func:`prime_retriever.store.point_id`),
  so re-running never duplicates a document.
* Resumable: ids already in the store (``existing_ids``) are skipped, so after an interruption a
  re-run encodes and upserts only the rest.
* The store's ``ensure_collection`` records the encoder's name and dimension; indexing with
  another encoder raises :class:`~prime_retriever.errors.StoreError`.
* Encoding runs on a worker thread, batch by batch, under a tqdm progress bar; with
  ``cache_dir`` the embeddings are cached on disk (:class:`~prime_retriever.embedding_cache.CachedEncoder`).

CLI::

    prime-retriever index --corpus corpus.jsonl --store local|edge|URL [--path DIR] [--collection NAME]

where ``corpus.jsonl`` holds one ``{"id", "text", "title"}`` object a line.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from prime_retriever.cli_types import positive_int
from prime_retriever.documents import Document
from prime_retriever.errors import DataError
from prime_retriever.jsonl import iter_jsonl
from prime_retriever.retriever import RetryPolicy, call_store, open_store

if TYPE_CHECKING:
    from prime_retriever.encoders import TextEncoder
    from prime_retriever.store import VectorStore

__all__ = ["IndexReport", "add_cli_arguments", "index_documents", "read_corpus_jsonl", "run_cli"]

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


def _optional_str(rec: Mapping[str, Any], key: str, where: str) -> str:
    """``rec[key]`` as a string: "" when missing or null, a :class:`DataError` when not a string."""
    value = rec.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DataError(f"{where}: '{key}' must be a string")
    return value


def read_corpus_jsonl(path: str | os.PathLike[str], *, allow_duplicates: bool = True) -> list[Document]:
    """Read a generic JSONL corpus: one ``{"id": str, "text": str, "title": str?, "scope": str?}`` object a line.

    Raises:
        DataError: a line is not a JSON object, ``id``/``text`` is missing, empty or not a string,
            or (with ``allow_duplicates=False``) an id repeats.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"corpus file not found: {p}")
    docs: list[Document] = []
    seen: set[str] = set()
    for n, rec in iter_jsonl(p):
        where = f"{p}:{n}"
        doc_id, text = rec.get("id"), rec.get("text")
        if not isinstance(doc_id, str) or not doc_id:
            raise DataError(f"{where}: 'id' must be a non-empty string")
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{where}: 'text' must be a non-empty string")
        title, scope = _optional_str(rec, "title", where), _optional_str(rec, "scope", where)
        if not allow_duplicates and doc_id in seen:
            raise DataError(f"{where}: duplicate document id {doc_id!r}")
        seen.add(doc_id)
        docs.append(Document(id=doc_id, text=text, title=title, scope=scope))
    return docs


def unique_documents(documents: Iterable[Document]) -> tuple[list[Document], int]:
    """``documents`` with each id once (its first document kept), and how many repeats were skipped."""
    seen: set[str] = set()
    out: list[Document] = []
    dup = 0
    for d in documents:
        if not isinstance(d, Document):
            raise DataError(f"expected Document objects, got {type(d).__name__}")
        if d.id in seen:
            dup += 1
            continue
        seen.add(d.id)
        out.append(d)
    return out, dup


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

    Raises:
        StoreError: the collection was built with another encoder or dimension.
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
    await call_store(store.name, "ensure_collection", lambda: store.ensure_collection(dim, name), policy)
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
            upsert = functools.partial(store.upsert, chunk_ids, vectors, payloads)
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


# ---------------------------------------------------------------------------------------- CLI


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``prime-retriever index``."""
    parser.add_argument("--corpus", required=True, help='JSONL corpus, one {"id", "text", "title"} object a line')
    parser.add_argument("--store", default="local",
                        help="'local' (Qdrant local mode), 'edge' (Qdrant Edge) or a server URL http(s)://...")
    parser.add_argument("--path", default=None, help="directory of a local or edge store (required for them)")
    parser.add_argument("--collection", default="prime_docs", help="collection name (Qdrant local/server)")
    parser.add_argument("--api-key", default=os.environ.get("QDRANT_API_KEY"), help="server API key")
    parser.add_argument("--encoder", default=None, help="encoder model folder (default: the bundled MiniLM)")
    parser.add_argument("--cache-dir", default=None, help="embedding cache directory (default: the user cache)")
    parser.add_argument("--no-cache", action="store_true", help="do not cache embeddings on disk")
    parser.add_argument("--batch-size", type=positive_int, default=256, help="documents per encode+upsert step")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _store_spec(args: argparse.Namespace) -> str:
    """The store spec, refused when a typo would silently make it a local-mode folder elsewhere."""
    spec = str(args.store)
    if spec in ("local", "edge"):
        if not args.path:
            raise DataError(f"--store {spec} needs --path DIR (an in-memory index would be lost at exit)")
        if Path(args.path).exists() and not Path(args.path).is_dir():
            raise DataError(f"--path {args.path} is a file, not a store directory")
    elif spec.startswith(("local:", "edge:", "http://", "https://")):
        if args.path:
            raise DataError(f"--path is for --store local|edge; {spec!r} names its own location")
    else:
        raise DataError(f"--store {spec!r}: expected local, edge, local:DIR, edge:DIR or http(s)://HOST")
    return spec


async def _run(args: argparse.Namespace) -> IndexReport:
    from prime_retriever.encoders import HFTextEncoder

    # everything that can fail on bad input fails before the store is created
    spec = _store_spec(args)
    docs = read_corpus_jsonl(args.corpus)
    encoder: TextEncoder = HFTextEncoder(args.encoder)
    if not args.no_cache:
        from prime_retriever.embedding_cache import CachedEncoder, EmbeddingCache

        encoder = CachedEncoder(encoder, EmbeddingCache(args.cache_dir))
    store = open_store(spec, path=args.path, collection=args.collection, api_key=args.api_key)
    async with store:
        return await index_documents(store, docs, encoder=encoder, batch_size=args.batch_size,
                                     progress=not args.no_progress)


def run_cli(args: argparse.Namespace) -> int:
    """Run ``prime-retriever index``; print the :class:`IndexReport` as JSON."""
    report = asyncio.run(_run(args))
    print(json.dumps(asdict(report), indent=2))
    return 0
