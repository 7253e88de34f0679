"""``prime-retriever bench-retriever``: search latency, micro-batching throughput and PREPARE-cache figures.

Corpus: every paragraph of every HotpotQA file under ``$PRIME_DATA_DIR/hotpotqa`` (default
``<repo>/../shared/data``), pooled and deduplicated by title (~15k paragraphs); queries: the
``multi_hop`` framing (context = [question, one gold paragraph], query = the question). The
paragraph embeddings are cached on disk (:class:`~prime_retriever.text.embedding_cache.CachedEncoder`),
so only the first run pays for encoding them.

Figures printed:

* p50/p95 latency of one ``search`` at a time, Qdrant local mode and Qdrant Edge (inputs given as
  embeddings, so the figure is predictor + store; plus rows with text inputs, the encoder included
  (``--encoder``, default ``fast``), its share of the search, and a text-in search after
  ``prepare(session, context)`` against the same search without it);
* throughput with 64 concurrent callers, micro-batching on and off, and their ratio;
* latency of a search served by the PREPARE cache against one that misses it;
* the cache hit rate on the multi_hop framing: ``prepare(session, [question, first gold paragraph])``
  (the last turn standing in for the query), then ``search(..., query=question)``;
* on Qdrant Edge, hybrid search (``PredictiveRetriever(hybrid=True)``) against dense search on one shard
  holding BM25 vectors, p50/p95 side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import random
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from prime_retriever.cli.arg_types import cosine, non_negative_int, positive_int, report_path
from prime_retriever.errors import DataError
from prime_retriever.retrieval.link_graph import LinkExpansion, LinkGraph
from prime_retriever.text.documents import Document
from training.data.examples import MULTI_HOP
from training.data.hotpotqa import hotpotqa_files, load_hotpotqa_pool

if TYPE_CHECKING:
    from prime_retriever.backends.inference import PredictorBackend
    from prime_retriever.retrieval.retriever import PredictiveRetriever
    from prime_retriever.stores.base import VectorStore
    from prime_retriever.text.encoders import TextEncoder

__all__ = ["BenchQuery", "add_cli_arguments", "load_hotpotqa_bench", "run_cli"]

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class BenchQuery:
    """One multi_hop query: the question, the gold paragraph given in the context, and the one to find."""

    question: str
    given: Document
    target_id: str


def default_data_dir() -> Path:
    """``$PRIME_DATA_DIR``, else ``<repo>/../shared/data``."""
    env = os.environ.get("PRIME_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def load_hotpotqa_bench(data_dir: Path) -> tuple[list[Document], list[BenchQuery], str]:
    """The pooled HotpotQA corpus and the multi_hop queries; also says which reader was used."""
    if not (data_dir / "hotpotqa").is_dir():
        raise DataError(f"no hotpotqa/ under {data_dir}; set PRIME_DATA_DIR")
    ds = load_hotpotqa_pool(hotpotqa_files(data_dir), MULTI_HOP)
    queries = []
    for ex in ds.examples:
        if len(ex.context) < 2 or not ex.exclude_ids or ex.exclude_ids[0] not in ds.corpus:
            continue
        queries.append(BenchQuery(ex.query, ds.corpus[ex.exclude_ids[0]], ex.positive_ids[0]))
    return list(ds.corpus.values()), queries, "training.data.hotpotqa (all files pooled)"


def _pct(xs: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


def _ms(x: float | None) -> str:
    return "n/a" if x is None or x != x else f"{1000 * x:.2f} ms"


async def _latencies(n: int, call: Callable[[int], Awaitable[Any]]) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        await call(i)
        out.append(time.perf_counter() - t0)
    return out


async def _throughput(callers: int, total: int, call: Callable[[int], Awaitable[Any]]) -> float:
    """Searches per second with ``callers`` concurrent loops sharing ``total`` calls."""
    counter = iter(range(total))

    async def worker() -> None:
        for i in counter:
            await call(i)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(callers)))
    return total / (time.perf_counter() - t0)


async def _text_rows(make: Callable[..., PredictiveRetriever], raw: TextEncoder, queries: Sequence[BenchQuery],
                     n: int, k: int) -> dict[str, Any]:
    """Text-in figures: a search with texts in (no text cache: every text encoded), the encoder's share of
    it, and a search after ``prepare(session, [given paragraph])`` against the same search without it."""
    plain = make(True, text_cache_size=0)
    await plain.warmup()

    async def text_call(i: int) -> Any:
        q = queries[(i + 7) % len(queries)]
        return await plain.search([q.question, q.given.encoding_text], q.question, k=k)

    tl = await _latencies(n, text_call)
    enc: list[float] = []
    for i in range(n):
        q = queries[(i + 7) % len(queries)]
        t0 = time.perf_counter()
        raw.encode([q.question, q.given.encoding_text], show_progress=False)
        enc.append(time.perf_counter() - t0)
    await plain.close()
    fresh, prepared = make(True), make(True)  # each with its own (empty) in-memory text cache
    await fresh.warmup()
    await prepared.warmup()
    no_prep: list[float] = []
    after: list[float] = []
    same = 0
    hits = 0
    for i in range(n):
        q = queries[(i + 11) % len(queries)]
        ctx = [q.given.encoding_text]
        t0 = time.perf_counter()
        want = await fresh.search(ctx, q.question, k=k)
        no_prep.append(time.perf_counter() - t0)
        await prepared.prepare(f"p{i}", ctx)
        t0 = time.perf_counter()
        got = await prepared.search(ctx, q.question, k=k, session_id=f"p{i}")
        after.append(time.perf_counter() - t0)
        hits += got.source == "cache"
        same += got.source != "cache" and [h.doc_id for h in got] == [h.doc_id for h in want]
    # the floor of any PREPARE that still encodes the query: the same searches with every text already in
    # the text cache (what is left is expansion, predictor, store), plus one query encode alone
    cached: list[float] = []
    q_enc: list[float] = []
    for i in range(n):
        q = queries[(i + 11) % len(queries)]
        t0 = time.perf_counter()
        await fresh.search([q.given.encoding_text], q.question, k=k)
        cached.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        raw.encode([q.question], show_progress=False)
        q_enc.append(time.perf_counter() - t0)
    await fresh.close()
    await prepared.close()
    return {
        "search_text_p50_s": _pct(tl, 50), "search_text_p95_s": _pct(tl, 95),
        "encoder_text_p50_s": _pct(enc, 50), "encoder_share": _pct(enc, 50) / max(_pct(tl, 50), 1e-12),
        "text_no_prepare_p50_s": _pct(no_prep, 50), "text_after_prepare_p50_s": _pct(after, 50),
        "text_after_prepare_hits": hits, "text_after_prepare_misses": n - hits,
        "text_after_prepare_misses_identical": same,
        "text_all_cached_p50_s": _pct(cached, 50), "query_encode_p50_s": _pct(q_enc, 50),
    }


async def _hybrid_rows(make: Callable[[bool], PredictiveRetriever], queries: Sequence[BenchQuery],
                       contexts: Sequence[npt.NDArray[np.float32]], n: int, k: int) -> dict[str, Any]:
    """Dense against hybrid search on one collection holding BM25 vectors: the same context embeddings and
    query texts (their embeddings served from the text cache after a warm pass), calls interleaved so
    that both see the same machine load."""
    dense, hybrid = make(False), make(True)
    for r in (dense, hybrid):
        await r.warmup()
    calls = [(contexts[i % len(queries)], queries[i % len(queries)].question) for i in range(n)]
    for ctx, q in calls:  # warm: every query text encoded once, into each retriever's text cache
        await dense.search(ctx, q, k=k)
        await hybrid.search(ctx, q, k=k)
    lat: dict[str, list[float]] = {"dense": [], "hybrid": []}
    changed = 0
    for ctx, q in calls:
        t0 = time.perf_counter()
        a = await dense.search(ctx, q, k=k)
        lat["dense"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        b = await hybrid.search(ctx, q, k=k)
        lat["hybrid"].append(time.perf_counter() - t0)
        changed += a.doc_ids != b.doc_ids
    await dense.close()
    await hybrid.close()
    return {"dense_text_p50_s": _pct(lat["dense"], 50), "dense_text_p95_s": _pct(lat["dense"], 95),
            "hybrid_text_p50_s": _pct(lat["hybrid"], 50), "hybrid_text_p95_s": _pct(lat["hybrid"], 95),
            "hybrid_over_dense_p50": _pct(lat["hybrid"], 50) / max(_pct(lat["dense"], 50), 1e-12),
            "hybrid_changed_rankings": changed, "hybrid_measured": n}


def _on_store(make: Callable[..., PredictiveRetriever], store: VectorStore, hybrid: bool) -> PredictiveRetriever:
    return make(True, store, hybrid=hybrid)


async def _bench(args: argparse.Namespace) -> dict[str, Any]:
    from prime_retriever.backends.factory import make_backend
    from prime_retriever.model.random_predictor import random_predictor
    from prime_retriever.retrieval.indexing import index_documents
    from prime_retriever.retrieval.predictive_cache import PredictiveCache
    from prime_retriever.retrieval.retriever import PredictiveRetriever
    from prime_retriever.stores.edge import EdgeStore
    from prime_retriever.stores.qdrant import QdrantStore
    from prime_retriever.text.embedding_cache import CachedEncoder, EmbeddingCache
    from prime_retriever.text.fast_encoder import load_encoder

    t_start = time.perf_counter()
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    docs, queries, reader = load_hotpotqa_bench(data_dir)
    if args.max_docs:
        docs = docs[: args.max_docs]
    ids = {d.id for d in docs}
    queries = [q for q in queries if q.target_id in ids and q.given.id in ids]
    rng = random.Random(args.seed)
    rng.shuffle(queries)
    queries = queries[: args.queries]
    if not queries:
        raise DataError("no multi_hop query has both gold paragraphs in the corpus")
    raw = load_encoder(args.encoder)
    encoder = CachedEncoder(raw, EmbeddingCache(args.cache_dir))
    texts = [d.encoding_text for d in docs]
    print(f"corpus: {len(docs)} paragraphs ({reader}); {len(queries)} multi_hop queries", flush=True)
    for s in range(0, len(texts), 1024):  # chunks, so an interrupted first run keeps its progress
        encoder.encode(texts[s : s + 1024], batch_size=64, show_progress=len(texts) > 1024)

    backend: PredictorBackend
    expansion: LinkExpansion | None = None
    if args.checkpoint:
        from prime_retriever.model.checkpoint import load_checkpoint

        model = load_checkpoint(Path(args.checkpoint)).model
        backend = make_backend(model, args.backend)
        predictor_desc = f"checkpoint {args.checkpoint} ({args.backend})"
        if model.config.link_candidates:  # served as trained: with its link expansion
            graph = LinkGraph.load(args.links) if args.links else LinkGraph.build(docs)
            expansion = LinkExpansion.for_config(model.config, graph)
            predictor_desc += (f", link expansion ({model.config.link_candidates} candidates, "
                               f"{model.config.link_seeds} seed; graph {args.links or 'built from the corpus'})")
    else:
        backend = make_backend(random_predictor(raw.dim, perturb=0.002), args.backend)
        predictor_desc = ("random-init small residual predictor (2 layers, hidden 128, output_proj std 0.002), "
                          f"{args.backend}")
    print(f"predictor: {predictor_desc}", flush=True)

    # context / query embeddings of the benchmark queries (cached on disk too)
    q_emb = encoder.encode([q.question for q in queries], show_progress=False)  # Q × D
    g_emb = encoder.encode([q.given.encoding_text for q in queries], show_progress=False)  # Q × D
    contexts = [np.stack([q_emb[i], g_emb[i]]) for i in range(len(queries))]  # Q × (2 × D)

    tmp = tempfile.TemporaryDirectory(prefix="prime-bench-")
    results: dict[str, Any] = {"corpus": len(docs), "queries": len(queries), "predictor": predictor_desc,
                               "encoder": raw.name}
    stores: dict[str, Callable[[], VectorStore]] = {
        "local": lambda: QdrantStore("bench", location=":memory:"),
        "edge": lambda: EdgeStore(Path(tmp.name) / "edge"),
    }
    n_lat = min(args.latency_queries, len(queries))
    try:
        for kind, make in stores.items():
            store = make()
            report = await index_documents(store, docs, encoder=encoder, progress=False)
            print(f"[{kind}] indexed {report.count_after} docs in {report.seconds:.1f}s", flush=True)

            def retriever(batching: bool, st: VectorStore = store, **kw: Any) -> PredictiveRetriever:
                return PredictiveRetriever(backend, encoder.encoder, st, micro_batching=batching, owns_store=False,
                                           batch_wait_s=args.batch_wait_ms / 1000, expansion=expansion, **kw)

            r = retriever(True)
            await r.warmup()

            async def one(i: int, rr: PredictiveRetriever = r) -> Any:
                j = i % len(queries)
                return await rr.search(contexts[j], q_emb[j], k=args.k, exclude_ids=[queries[j].given.id])

            await _latencies(10, one)  # warm the store's caches
            lat = await _latencies(n_lat, one)
            async def base_call(i: int, rr: PredictiveRetriever = r) -> Any:
                return await rr.search_baseline(q_emb[i % len(queries)], k=args.k)

            base = await _latencies(n_lat, base_call)
            r_solo = retriever(False)
            solo = await _latencies(n_lat, lambda i, rr=r_solo: one(i, rr))  # type: ignore[misc]
            await r_solo.close()
            res: dict[str, Any] = {
                "search_p50_s": _pct(lat, 50), "search_p95_s": _pct(lat, 95),
                "baseline_p50_s": _pct(base, 50), "baseline_p95_s": _pct(base, 95),
                "search_unbatched_p50_s": _pct(solo, 50), "search_unbatched_p95_s": _pct(solo, 95),
            }
            res.update(await _text_rows(retriever, raw, queries, min(50, n_lat), args.k))
            # throughput, 64 concurrent callers, batching on / off
            for batching in (True, False):
                rb = retriever(batching, max_batch_size=args.max_batch_size)

                async def call(i: int, rr: PredictiveRetriever = rb) -> Any:
                    j = i % len(queries)
                    return await rr.search(contexts[j], q_emb[j], k=args.k)

                await rb.warmup()
                qps = await _throughput(args.callers, args.throughput_calls, call)
                res["qps_batched" if batching else "qps_unbatched"] = qps
                if batching:
                    res["mean_batch_size"] = rb.batch_stats.mean_batch_size
                await rb.close()
            res["batching_speedup"] = res["qps_batched"] / res["qps_unbatched"]
            await r.close()
            # PREPARE cache: multi_hop framing, prepare([question, first gold]), then search(question)
            cache = PredictiveCache(max_size=4096, ttl_s=None, threshold=args.threshold)
            rc = retriever(True, cache=cache)
            n_cache = min(args.cache_queries, len(queries))
            for i in range(n_cache):
                q = queries[i]
                await rc.prepare(f"s{i}", [q.question, q.given.encoding_text], k=args.k + 5,
                                 exclude_ids=[q.given.id])
            hit_lat: list[float] = []
            miss_lat: list[float] = []
            for i in range(n_cache):
                q = queries[i]
                out = await rc.search([q.question, q.given.encoding_text], q.question, k=args.k,
                                      session_id=f"s{i}", exclude_ids=[q.given.id])
                (hit_lat if out.source == "cache" else miss_lat).append(out.latency_s)
            res["cache_hit_rate_multi_hop"] = cache.stats.hit_rate
            # controlled hit-vs-miss latency (embeddings in, so no encoding on either side): sessions
            # prepared with the real query (hits) or not prepared at all (misses)
            cache2 = PredictiveCache(max_size=4096, ttl_s=None, threshold=args.threshold)
            rc2 = retriever(True, cache=cache2)
            ctl_hit: list[float] = []
            ctl_miss: list[float] = []
            for i in range(n_cache):
                if i % 2 == 0:
                    await rc2.prepare(f"c{i}", contexts[i], query=q_emb[i], k=args.k)
                out = await rc2.search(contexts[i], q_emb[i], k=args.k, session_id=f"c{i}")
                (ctl_hit if out.source == "cache" else ctl_miss).append(out.latency_s)
            res.update({
                "cache_hit_p50_s": _pct(ctl_hit, 50), "cache_miss_p50_s": _pct(ctl_miss, 50),
                "cache_hits_measured": len(ctl_hit), "cache_misses_measured": len(ctl_miss),
                "cache_latency_saved_s": cache2.stats.latency_saved_s,
                "multi_hop_hit_p50_s": _pct(hit_lat, 50), "multi_hop_miss_p50_s": _pct(miss_lat, 50),
            })
            await rc.close()
            await rc2.close()
            await store.close()
            if kind == "edge":  # hybrid search: a second shard holding BM25 vectors too, dense and hybrid on it
                from prime_retriever.text.bm25 import Bm25Encoder

                hstore = EdgeStore(Path(tmp.name) / "edge-hybrid")
                await index_documents(hstore, docs, encoder=encoder, progress=False, bm25=Bm25Encoder())
                res.update(await _hybrid_rows(functools.partial(_on_store, retriever, hstore), queries, contexts,
                                              min(100, n_lat), args.k))
                await hstore.close()
            results[kind] = res
            print(f"[{kind}] done", flush=True)
    finally:
        tmp.cleanup()
    results["seconds"] = time.perf_counter() - t_start
    return results


def _print(results: dict[str, Any], args: argparse.Namespace) -> None:
    print()
    print(f"bench-retriever: {results['corpus']} HotpotQA paragraphs, {results['queries']} multi_hop queries, "
          f"k={args.k}")
    print(f"predictor: {results['predictor']}")
    for kind in ("local", "edge"):
        r = results.get(kind)
        if r is None:
            continue
        name = "Qdrant local mode (:memory:)" if kind == "local" else "Qdrant Edge (in-process, HNSW)"
        print(f"\n== {name}")
        print(f"search, one at a time (embeddings in): p50 {_ms(r['search_p50_s'])}  p95 {_ms(r['search_p95_s'])}")
        print(f"search, micro-batching off:            p50 {_ms(r['search_unbatched_p50_s'])}  "
              f"p95 {_ms(r['search_unbatched_p95_s'])}")
        print(f"search_baseline (query embedding):     p50 {_ms(r['baseline_p50_s'])}  p95 {_ms(r['baseline_p95_s'])}")
        if "search_text_p50_s" in r:
            print(f"search, texts in (encoder included):   p50 {_ms(r['search_text_p50_s'])}  "
                  f"p95 {_ms(r['search_text_p95_s'])}  (encoder p50 {_ms(r['encoder_text_p50_s'])}, "
                  f"{100 * r['encoder_share']:.0f}% of the search; {results['encoder']})")
            print(f"texts in, after prepare(session, context): p50 {_ms(r['text_after_prepare_p50_s'])} vs "
                  f"{_ms(r['text_no_prepare_p50_s'])} without PREPARE "
                  f"({r['text_after_prepare_hits']} hits; {r['text_after_prepare_misses_identical']} of "
                  f"{r['text_after_prepare_misses']} misses with the hits of the search without PREPARE)")
            floor = r["text_all_cached_p50_s"] + r["query_encode_p50_s"]
            print(f"  the floor of a PREPARE that still encodes the query: every text cached p50 "
                  f"{_ms(r['text_all_cached_p50_s'])} + one query encode {_ms(r['query_encode_p50_s'])} = "
                  f"{_ms(floor)}, at most x{r['text_no_prepare_p50_s'] / max(floor, 1e-12):.2f}")
        if "hybrid_text_p50_s" in r:
            print(f"hybrid (predicted + BM25 of the query, RRF in the store) vs dense, one shard, text query: "
                  f"p50 {_ms(r['hybrid_text_p50_s'])} vs {_ms(r['dense_text_p50_s'])} "
                  f"(x{r['hybrid_over_dense_p50']:.2f}; p95 {_ms(r['hybrid_text_p95_s'])} vs "
                  f"{_ms(r['dense_text_p95_s'])}; {r['hybrid_changed_rankings']} of {r['hybrid_measured']} "
                  "rankings changed)")
        print(f"throughput, {args.callers} callers: batched {r['qps_batched']:.0f}/s "
              f"(mean batch {r['mean_batch_size']:.1f}), unbatched {r['qps_unbatched']:.0f}/s, "
              f"ratio {r['batching_speedup']:.2f}x")
        print(f"PREPARE cache: hit p50 {_ms(r['cache_hit_p50_s'])} vs miss p50 {_ms(r['cache_miss_p50_s'])} "
              f"({r['cache_hits_measured']} hits / {r['cache_misses_measured']} misses; "
              f"saved {r['cache_latency_saved_s'] * 1000:.0f} ms in all)")
        print(f"PREPARE cache hit rate, multi_hop framing (threshold {args.threshold}): "
              f"{100 * r['cache_hit_rate_multi_hop']:.1f}%")
    print(f"\ntotal {results['seconds']:.0f}s")


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``prime-retriever bench-retriever``."""
    parser.add_argument("--checkpoint", default=None, help="predictor checkpoint (default: a random-init one)")
    parser.add_argument("--backend", default="eager", choices=["eager", "fast", "compiled", "onnx"],
                        help="predictor backend")
    parser.add_argument("--links", default=None,
                        help="link graph for a checkpoint trained with link expansion (default: built from the corpus)")
    parser.add_argument("--encoder", default="fast",
                        help="text encoder: fast (default), eager, onnx-fp32, onnx-int8 or a model folder")
    parser.add_argument("--data-dir", default=None, help="data folder (default: $PRIME_DATA_DIR or ../shared/data)")
    parser.add_argument("--cache-dir", default=None, help="embedding cache folder (default: the user cache)")
    parser.add_argument("--max-docs", type=non_negative_int, default=0, help="cap the corpus (0: all paragraphs)")
    parser.add_argument("--queries", type=positive_int, default=500, help="multi_hop queries drawn")
    parser.add_argument("--latency-queries", type=positive_int, default=200, help="sequential searches for p50/p95")
    parser.add_argument("--throughput-calls", type=positive_int, default=640, help="searches in each throughput run")
    parser.add_argument("--callers", type=positive_int, default=64, help="concurrent callers in the throughput runs")
    parser.add_argument("--max-batch-size", type=positive_int, default=32, help="micro-batch size cap")
    parser.add_argument("--batch-wait-ms", type=float, default=2.0, help="micro-batch window")
    parser.add_argument("--cache-queries", type=positive_int, default=200, help="sessions in the PREPARE-cache runs")
    parser.add_argument("--threshold", type=cosine, default=0.9, help="PREPARE-cache cosine threshold, in [-1, 1]")
    parser.add_argument("-k", type=positive_int, default=5, help="hits per search")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=report_path, default=None, help="also write the figures to this JSON file")


def run_cli(args: argparse.Namespace) -> int:
    """Run the benchmark and print its figures."""
    results = asyncio.run(_bench(args))
    _print(results, args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0
