"""``prime-retriever index``: encode a corpus and index it into Qdrant (local, edge or server).

    prime-retriever index --corpus corpus.jsonl --store local|edge|URL [--path DIR] [--collection NAME] [--hybrid]

where ``corpus.jsonl`` holds one ``{"id", "text", "title"}`` object a line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from dataclasses import asdict
from pathlib import Path

from prime_retriever.cli.arg_types import positive_int
from prime_retriever.errors import DataError
from prime_retriever.retrieval.indexing import IndexReport, index_documents
from prime_retriever.stores.open import open_store
from prime_retriever.text.bm25 import Bm25Encoder
from prime_retriever.text.corpus import read_corpus_jsonl
from prime_retriever.text.embedding_cache import CachedEncoder, EmbeddingCache
from prime_retriever.text.encoders import TextEncoder
from prime_retriever.text.fast_encoder import load_encoder


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``prime-retriever index``."""
    parser.add_argument("--corpus", required=True, help='JSONL corpus, one {"id", "text", "title"} object a line')
    parser.add_argument("--store", default="local",
                        help="'local' (Qdrant local mode), 'edge' (Qdrant Edge) or a server URL http(s)://...")
    parser.add_argument("--path", default=None, help="directory of a local or edge store (required for them)")
    parser.add_argument("--collection", default="prime_docs", help="collection name (Qdrant local/server)")
    parser.add_argument("--api-key", default=os.environ.get("QDRANT_API_KEY"), help="server API key")
    parser.add_argument("--encoder", default=None,
                        help="fast (default: the bundled MiniLM on its fastest path within cosine 0.995 of fp32), "
                             "eager, onnx-fp32, onnx-int8, bge-small-en-v1.5, e5-small-v2 or a model folder")
    parser.add_argument("--cache-dir", default=None, help="embedding cache directory (default: the user cache)")
    parser.add_argument("--no-cache", action="store_true", help="do not cache embeddings on disk")
    parser.add_argument("--hybrid", action="store_true",
                        help="also store BM25 sparse vectors, for PredictiveRetriever(..., hybrid=True)")
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
    # everything that can fail on bad input fails before the store is created
    spec = _store_spec(args)
    docs = read_corpus_jsonl(args.corpus)
    encoder: TextEncoder = load_encoder(args.encoder)
    bm25 = Bm25Encoder() if args.hybrid else None
    if not args.no_cache:
        encoder = CachedEncoder(encoder, EmbeddingCache(args.cache_dir))
    store = open_store(spec, path=args.path, collection=args.collection, api_key=args.api_key)
    async with store:
        return await index_documents(store, docs, encoder=encoder, batch_size=args.batch_size,
                                     progress=not args.no_progress, bm25=bm25)


def run_cli(args: argparse.Namespace) -> int:
    """Run ``prime-retriever index``; print the :class:`IndexReport` as JSON."""
    report = asyncio.run(_run(args))
    print(json.dumps(asdict(report), indent=2))
    return 0
