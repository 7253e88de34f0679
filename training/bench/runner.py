"""The end-to-end benchmark: train (or load), index into Qdrant, search through the real retriever, report.

Every eval item goes through :class:`prime_retriever.PredictiveRetriever` on one store and one
corpus: ``search`` for the predictor and ``search_baseline`` for the query, linear-adapter and
concatenation baselines (the adapter's and the concatenation's vectors are given to
``search_baseline`` as the query embedding). Metrics use k = 100.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from prime_retriever.backends.factory import make_backend
from prime_retriever.errors import CheckpointError, StoreError
from prime_retriever.model.checkpoint import load_checkpoint, read_meta
from prime_retriever.retrieval.link_graph import LinkExpansion, LinkGraph
from prime_retriever.retrieval.retriever import PredictiveRetriever
from prime_retriever.stores.open import open_store
from prime_retriever.text.documents import Document, scope_filter
from prime_retriever.text.embedding_cache import CachedEncoder
from prime_retriever.text.fast_encoder import load_encoder
from prime_retriever.text.onnx_encoder import model_of
from training.bench.adapter import LinearAdapter, load_adapter, save_adapter, train_adapter
from training.bench.own_store import refuse_foreign_store, remove_own_store
from training.bench.recipe import Recipe, train_with_recipe
from training.bench.report import markdown_table, plot_recall, write_json
from training.bench.suite import BenchSuite
from training.data import EncodedCorpus, Example
from training.data.examples import MULTI_HOP
from training.metrics import auroc, paired_bootstrap_ci, precision_at_k, recall_curve, reciprocal_rank, summarize
from training.trainer import time_budget_warning

K_EVAL = 100
CONCAT_FRAMINGS = ("multi_hop", "given")


@dataclass
class BenchOptions:
    out: Path
    store: str = "edge"
    checkpoint: Path | None = None
    seed: int = 0
    recipe: Recipe = field(default_factory=Recipe)
    micro_batching: bool = False  # sequential searches: honest per-call latency
    backend: str = "eager"  # eager | fast | compiled | onnx: the predictor path searches go through
    encoder: str = "fast"  # a load_encoder spec: the X/Y-Encoder that encodes, trains and indexes


@dataclass
class MethodRun:
    ranked: list[list[str]] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    confidence: list[float] = field(default_factory=list)


def _text_vectors(encoder: CachedEncoder, texts: Sequence[str]) -> dict[str, np.ndarray]:
    unique = list(dict.fromkeys(texts))
    vecs = encoder.encode(unique, batch_size=64)  # n × D
    return {t: vecs[i] for i, t in enumerate(unique)}


def _concat_text(ex: Example) -> str:
    return " ".join([*ex.context, ex.query])


async def _evaluate_framing(
    retriever: PredictiveRetriever,
    examples: Sequence[Example],
    framing: str,
    vec: dict[str, np.ndarray],
    adapter: LinearAdapter,
) -> dict[str, MethodRun]:
    runs: dict[str, MethodRun] = {m: MethodRun() for m in ("query_baseline", "linear_adapter", "predictor")}
    if framing in CONCAT_FRAMINGS:
        runs["concat_baseline"] = MethodRun()
    from tqdm.auto import tqdm

    for ex in tqdm(examples, desc=f"searching {framing}", unit="q", mininterval=2.0):
        q = vec[ex.query]  # D
        excl = list(ex.exclude_ids)
        flt = scope_filter(ex.scope) if ex.scope else None  # LoCoMo: the question's own conversation
        # texts in: link expansion reads the titles they mention (their embeddings are cached)
        res = await retriever.search(list(ex.context), ex.query, k=K_EVAL, filter=flt, exclude_ids=excl)
        runs["predictor"].ranked.append(res.doc_ids)
        runs["predictor"].latencies_ms.append(res.latency_s * 1e3)
        runs["predictor"].confidence.append(res.confidence)
        queries = {"query_baseline": q, "linear_adapter": adapter.transform(q[None])[0]}
        if "concat_baseline" in runs:
            queries["concat_baseline"] = vec[_concat_text(ex)]
        for name, v in queries.items():
            r = await retriever.search_baseline(v, k=K_EVAL, filter=flt, exclude_ids=excl)
            runs[name].ranked.append(r.doc_ids)
            runs[name].latencies_ms.append(r.latency_s * 1e3)
    return runs


def _framing_report(runs: dict[str, MethodRun], gold: list[set[str]]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    out: dict[str, Any] = {}
    curves: dict[str, np.ndarray] = {}
    for name, run in runs.items():
        out[name] = summarize(run.ranked, gold, run.latencies_ms)
        out[name]["p95_ms"] = float(np.percentile(run.latencies_ms, 95)) if run.latencies_ms else float("nan")
        curves[name] = recall_curve(run.ranked, gold, K_EVAL)
    pred, q, a = runs["predictor"], out["query_baseline"], out["linear_adapter"]
    p5 = precision_at_k(pred.ranked, gold, 5)
    top1 = precision_at_k(pred.ranked, gold, 1) > 0
    lo, hi = paired_bootstrap_ci(p5, precision_at_k(runs["linear_adapter"].ranked, gold, 5))
    qlo, qhi = paired_bootstrap_ci(
        reciprocal_rank(pred.ranked, gold), reciprocal_rank(runs["query_baseline"].ranked, gold)
    )
    p = out["predictor"]
    p["gains"] = {
        "p@5_x_query": p["p@5"] / max(q["p@5"], 1e-9),
        "mrr_x_query": p["mrr"] / max(q["mrr"], 1e-9),
        "p@5_x_adapter": p["p@5"] / max(a["p@5"], 1e-9),
        "mrr_x_adapter": p["mrr"] / max(a["mrr"], 1e-9),
        "p@5_minus_adapter_ci": [lo, hi],
        "mrr_minus_query_ci": [qlo, qhi],
    }
    p["confidence_auroc"] = auroc(np.asarray(pred.confidence), top1)
    return out, curves


def _subset(runs: dict[str, MethodRun], rows: Sequence[int]) -> dict[str, MethodRun]:
    """The same methods' runs, restricted to ``rows`` (one dataset's items of a framing)."""
    def pick(xs: list[Any]) -> list[Any]:
        return [xs[i] for i in rows] if xs else []

    return {n: MethodRun(pick(r.ranked), pick(r.latencies_ms), pick(r.confidence)) for n, r in runs.items()}


def _by_dataset(
    runs: dict[str, MethodRun], examples: Sequence[Example], gold: list[set[str]], dataset_of: dict[str, str]
) -> dict[str, dict[str, Any]]:
    """The framing's report per dataset (only where the framing pools more than one dataset)."""
    rows: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        rows.setdefault(dataset_of.get(ex.id, "?"), []).append(i)
    if len(rows) < 2:
        return {}
    return {name: _framing_report(_subset(runs, idx), [gold[i] for i in idx])[0] for name, idx in sorted(rows.items())}


def goal_lines(framings: dict[str, dict[str, Any]]) -> list[str]:
    """The issue's goals, checked one by one on the measured figures (keys may be ``framing/dataset``)."""
    lines = []
    for framing, m in framings.items():
        g = m["predictor"]["gains"]
        checks = [
            (f"P@5 >= 1.15x query ({g['p@5_x_query']:.3f}x)", g["p@5_x_query"] >= 1.15),
            (f"MRR >= 1.10x query ({g['mrr_x_query']:.3f}x)", g["mrr_x_query"] >= 1.10),
            (
                f"P@5 above adapter outside CI (paired CI [{g['p@5_minus_adapter_ci'][0]:+.3f}, "
                f"{g['p@5_minus_adapter_ci'][1]:+.3f}])",
                g["p@5_minus_adapter_ci"][0] > 0,
            ),
        ]
        if framing.split("/")[0] == "first_hop":
            checks.append((f"R@10 >= 0.72 ({m['predictor']['r@10']:.3f})", m["predictor"]["r@10"] >= 0.72))
        lines += [f"  [{'PASS' if ok else 'FAIL'}] {framing}: {text}" for text, ok in checks]
    return lines


def _check_checkpoint(ckpt: Path, encoder_name: str, *, can_train_adapter: bool) -> None:
    """Refuse, before any encoding, a checkpoint the benchmark cannot evaluate as trained."""
    meta = read_meta(ckpt)  # CheckpointError: missing or malformed
    if meta.encoder is not None and model_of(meta.encoder.name) != model_of(encoder_name):
        raise CheckpointError(f"{ckpt} was trained for the encoder {meta.encoder.name!r}; "
                              f"the benchmark encodes with {encoder_name!r}")
    if meta.needs_reindex:
        raise CheckpointError(f"{ckpt} was trained with a fine-tuned Y-Encoder (needs_reindex); the benchmark "
                              "indexes with the frozen encoder, so its predictions would miss")
    if not (ckpt.parent / "adapter").is_dir() and not can_train_adapter:
        raise CheckpointError(f"no adapter/ beside {ckpt} and no training examples to train the linear adapter "
                              "on: give --train FILE...")


def _corpus_fingerprint(docs: Sequence[Document]) -> str:
    """sha256 over every document's id, encoded text and scope: what an index of them holds."""
    h = hashlib.sha256()
    for d in docs:
        for part in (d.id, d.encoding_text, d.scope):
            h.update(part.encode("utf-8"))
            h.update(b"\x00")
    return h.hexdigest()


async def run_bench(suite: BenchSuite, opts: BenchOptions) -> dict[str, Any]:
    """Train or load, index, evaluate every framing; write report.json and recall_at_k.png under ``opts.out``."""
    t_start = time.perf_counter()
    out = opts.out
    if opts.store in ("local", "edge"):
        refuse_foreign_store(out / "store", opts.store)  # before any work: OUT/store is rebuilt only if it is ours
    out.mkdir(parents=True, exist_ok=True)
    encoder = CachedEncoder(load_encoder(opts.encoder))
    if opts.checkpoint is not None:
        _check_checkpoint(opts.checkpoint, encoder.name, can_train_adapter=bool(suite.train))
    print(
        f"suite: {len(suite.train)} train examples, {suite.n_eval} eval items "
        f"({', '.join(f'{k}: {len(v)}' for k, v in suite.eval.items())}), corpus {len(suite.corpus)} documents"
    )

    # ---- encode everything once (cached on disk across runs)
    t0 = time.perf_counter()
    enc_corpus = EncodedCorpus(suite.corpus, encoder)
    eval_examples = [ex for exs in suite.eval.values() for ex in exs]
    texts = [t for ex in eval_examples for t in (*ex.context, ex.query)]
    texts += [_concat_text(ex) for f, exs in suite.eval.items() if f in CONCAT_FRAMINGS for ex in exs]
    vec = _text_vectors(encoder, texts)
    t_encode = time.perf_counter() - t0

    # ---- the corpus's title-mention links (no labels: the corpus alone)
    t0 = time.perf_counter()
    graph = LinkGraph.build(suite.corpus.values(), show_progress=True)
    graph.save(out / "links.json")
    t_links = time.perf_counter() - t0
    print(f"link graph: {len(graph)} documents link to others, {graph.num_links} links ({t_links:.0f} s)")

    # ---- train (or load) the predictor and the linear adapter
    t0 = time.perf_counter()
    train_info: dict[str, Any] = {}
    if opts.checkpoint is None:
        ckpt_dir, adapter, train_info = train_with_recipe(suite, encoder, enc_corpus, out, opts.recipe, seed=opts.seed,
                                                          graph=graph)
        save_adapter(adapter, out / "adapter", encoder.name)
    else:
        ckpt_dir = opts.checkpoint
        adapter_dir = ckpt_dir.parent / "adapter"
        if adapter_dir.is_dir():
            adapter = load_adapter(adapter_dir, encoder.name)
        else:
            print(f"no adapter beside {ckpt_dir}: training the linear adapter now")
            from training.training_set import build_training_sets

            train_set, _, _ = build_training_sets(suite.train, [], suite.train_corpus, encoder, max_context_length=1)
            adapter = train_adapter(train_set, None, seed=opts.seed, max_epochs=3).adapter
    t_train = time.perf_counter() - t0
    loaded = load_checkpoint(ckpt_dir)  # verified: its meta (hash, calibration) is the one the weights carry
    model = loaded.model

    # ---- index into the project's own store, then search through the real retriever
    docs = [suite.corpus[i] for i in enc_corpus.ids]
    store_path, stamp = out / "store", out / "store.corpus-sha256"
    fingerprint = _corpus_fingerprint(docs)
    owned = opts.store in ("local", "edge")  # OUT/store is the benchmark's own: rebuilt when the corpus changed
    if owned and store_path.exists() and (not stamp.is_file() or stamp.read_text().strip() != fingerprint):
        remove_own_store(store_path, opts.store)  # a folder the benchmark did not build is refused, not deleted
        print(f"{store_path} held another corpus (an earlier run's): rebuilding it")
        stamp.unlink(missing_ok=True)
    store = open_store(opts.store, path=store_path)
    backend = make_backend(model, opts.backend)
    expansion = LinkExpansion.for_config(model.config, graph)
    calibration = loaded.meta.score_confidence  # None: an older checkpoint, the head's confidence is reported
    retriever = PredictiveRetriever(backend, encoder, store, micro_batching=opts.micro_batching, expansion=expansion,
                                    score_confidence=calibration)
    framings: dict[str, Any] = {}
    by_dataset: dict[str, dict[str, Any]] = {}
    curves: dict[str, dict[str, np.ndarray]] = {}
    async with retriever:
        t0 = time.perf_counter()
        # exact search: the edge store's HNSW index is not built, so no method loses to approximation
        report_index = await retriever.index(docs, optimize=False)
        t_index = time.perf_counter() - t0
        print(f"indexed {report_index}")
        if report_index.count_after != len(docs):  # documents the corpus does not hold would be searched too
            raise StoreError(f"the store {store.name} holds {report_index.count_after} documents, the corpus "
                             f"{len(docs)}: give an empty collection (or a fresh --out)")
        if owned:
            stamp.write_text(fingerprint + "\n")
        t0 = time.perf_counter()
        for framing, examples in suite.eval.items():
            runs = await _evaluate_framing(retriever, examples, framing, vec, adapter)
            gold = [set(ex.positive_ids) for ex in examples]
            framings[framing], curves[framing] = _framing_report(runs, gold)
            if parts := _by_dataset(runs, examples, gold, suite.eval_dataset):
                by_dataset[framing] = parts
        t_eval = time.perf_counter() - t0

    report: dict[str, Any] = {
        "framings": framings,
        "n_train": len(suite.train),
        "n_eval": suite.n_eval,
        "corpus_size": len(suite.corpus),
        "encoder": encoder.name,
        "checkpoint_sha256": loaded.meta.weights_sha256,
        "checkpoint": str(ckpt_dir),
        "link_graph": {"documents_linking": len(graph), "links": graph.num_links,
                       "expansion": None if expansion is None else {"seeds": expansion.seeds,
                                                                    "max_candidates": expansion.max_candidates}},
        "store": store.name,
        "score_confidence": None if calibration is None else calibration.model_dump(mode="json"),
        "backend": getattr(backend, "name", opts.backend),
        "sources": suite.sources,
        "unseen_datasets": suite.unseen,
        "by_dataset": by_dataset,
        "recipe": opts.recipe.describe(),
        "training": train_info,
        "seconds": {
            "encode": t_encode,
            "links": t_links,
            "train": t_train,
            "index": t_index,
            "evaluate": t_eval,
            "total": time.perf_counter() - t_start,
        },
        "seed": opts.seed,
        "suite_sha256": hashlib.sha256(
            "\n".join(sorted(ex.id for ex in [*suite.train, *eval_examples])).encode()
        ).hexdigest(),
    }
    write_json(report, out / "report.json")
    plot_recall(curves, out / "recall_at_k.png")
    print()
    print(markdown_table(framings))
    split = {f"{f}/{d}": m for f, parts in by_dataset.items() for d, m in parts.items()}
    if split:
        print(f"\nby dataset (never trained on: {', '.join(suite.unseen) or 'none'}):\n")
        print(markdown_table(split))
    print()
    print("goals:")
    print("\n".join(goal_lines(framings)))
    unseen_parts = {k: m for k, m in split.items() if k.split("/")[1] in suite.unseen}
    if unseen_parts:
        print("goals on the datasets the training never saw:")
        print("\n".join(goal_lines(unseen_parts)))
    if train_info.get("stop_reason") == "time_budget":
        print("\n" + time_budget_warning(opts.recipe.time_budget_s, "--time-budget-s"))
    print(
        f"\nwrote {out / 'report.json'} and {out / 'recall_at_k.png'} "
        f"({report['seconds']['total']:.0f} s: encode {t_encode:.0f}, train {t_train:.0f}, "
        f"index {t_index:.0f}, evaluate {t_eval:.0f})"
    )
    return report


def run(suite: BenchSuite, opts: BenchOptions) -> dict[str, Any]:
    return asyncio.run(run_bench(suite, opts))


__all__ = ["MULTI_HOP", "BenchOptions", "run", "run_bench"]
