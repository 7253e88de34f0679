"""``prime-retriever bench --leave-one-out``: does the gain carry to a dataset never trained on?

For every shipped dataset with an eval split (HotpotQA, MuSiQue, Doc2Dial, LoCoMo, DSTC11,
OR-ShARC) the predictor and the linear adapter are trained once on all the OTHER datasets (NQ-open
included, train only), with the left-out dataset absent from training entirely: not an example,
not a negative, not a link-expansion source (:attr:`BenchSuite.train_corpus`). Its questions are
then searched through the real :class:`~prime_retriever.retrieval.retriever.PredictiveRetriever`
over one store holding the pooled corpus of all datasets.

Affordable because everything that does not depend on the left-out dataset is shared: the corpus
is the same for every run, so it is encoded (through the on-disk embedding cache), linked and
indexed once; a run only trains (bounded by epochs over a fixed row count, i.e. by optimiser steps,
never by seconds, so a run gives the same numbers on any machine) and searches.

Methods per item: the query embedding, the linear adapter, the concatenation of all turns, the
predictor, BM25 alone (:mod:`training.bench.hybrid`, client-side) and the two hybrid peers, searched in the
store itself (a collection holding Qdrant-BM25 vectors beside the dense ones, the two prefetches fused by RRF
in one request): ``hybrid_query`` (the query embedding, what Haystack's ``QdrantHybridRetriever`` gives)
and ``hybrid_predictor`` (``PredictiveRetriever(hybrid=True)``, the serving path), and the do-no-harm
options of :mod:`prime_retriever.model.blend`: fixed blends of the prediction with the query
(``blend_<alpha>``) and the score-confidence gate (``gate``), plus the
``oracle`` upper bound (per question, the better of query and predictor, for each metric).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from prime_retriever.backends.factory import make_backend
from prime_retriever.model.blend import ConfidenceGate, blend_vectors
from prime_retriever.model.checkpoint import load_checkpoint
from prime_retriever.retrieval.indexing import index_documents
from prime_retriever.retrieval.link_graph import LinkExpansion, LinkGraph
from prime_retriever.retrieval.rerank import Reranker
from prime_retriever.retrieval.retriever import PredictiveRetriever
from prime_retriever.stores.base import ScoredDoc, VectorStore
from prime_retriever.stores.open import open_store
from prime_retriever.text.bm25 import Bm25Encoder
from prime_retriever.text.cross_encoder import CrossEncoder
from prime_retriever.text.documents import scope_filter
from prime_retriever.text.embedding_cache import CachedEncoder
from prime_retriever.text.fast_encoder import load_encoder
from training.bench.adapter import LinearAdapter
from training.bench.hybrid import BM25Ranker
from training.bench.leave_one_out_names import CONVERSATIONAL, LOO_DATASETS
from training.bench.leave_one_out_report import method_metrics, write_reports
from training.bench.recipe import Recipe, train_with_recipe
from training.bench.suite import BenchSuite, assemble_suite
from training.data import (
    FIRST_HOP,
    GIVEN,
    MULTI_HOP,
    Dataset,
    EncodedCorpus,
    Example,
    hotpotqa_files,
    load_dataset,
    load_hotpotqa_pool,
)
from training.data.splits import bucket
from training.mixing import foreign_history_examples

__all__ = ["CONVERSATIONAL", "LOO_DATASETS", "LeaveOneOutOptions", "load_named", "run_leave_one_out", "suite_without"]

TRAIN_ONLY = ("nq_open",)
K_EVAL = 100


@dataclass(frozen=True)
class LeaveOneOutOptions:
    """What the protocol runs; ``quick()`` is the reduced version the integration test runs."""

    out: Path
    datasets: tuple[str, ...] = LOO_DATASETS
    limit: int | None = None  # groups (questions, dialogues, conversations) kept per dataset
    max_eval: int = 600  # eval items per framing of the left-out dataset (hash order)
    recipe: Recipe = field(default_factory=lambda: Recipe(num_epochs=12, time_budget_s=1e9))
    store: str = "edge"
    seed: int = 0
    blend_alphas: tuple[float, ...] = (0.5,)
    gate_margin: float = 0.0
    foreign_history: float = 0.0  # share of given train rows copied with another conversation's context
    hybrid: bool = True  # the BM25 row and the hybrid peers (BM25 vectors in the store, fused by RRF there)
    reuse: bool = False  # evaluate the checkpoints an earlier run left in ``out`` (training.json) without retraining
    encoder: str = "fast"  # a load_encoder spec
    rerank: int = 0  # rerank the hybrid rows' top N with the cross-encoder (0: off)

    @classmethod
    def quick(cls, out: Path, datasets: Sequence[str] = ("orsharc", "dstc11")) -> LeaveOneOutOptions:
        """A few groups per dataset, two epochs, two left-out datasets: minutes on a CPU."""
        return cls(out=out, datasets=tuple(datasets), limit=6, max_eval=40,
                   recipe=Recipe(num_epochs=2, time_budget_s=1e9, batch_size=16))


def load_named(data_dir: Path, *, sentence_turns: bool = False) -> list[tuple[str, list[Dataset]]]:
    """Every shipped dataset, loaded once, under its name (the order fixes how the corpus is pooled)."""
    files = hotpotqa_files(data_dir)
    hotpot = [load_hotpotqa_pool(files, f, sentence_turns=sentence_turns) for f in (FIRST_HOP, MULTI_HOP)]
    musique_path = data_dir / "musique" / "hipporag_train100.json"
    orsharc = data_dir / "orsharc"
    return [
        ("hotpotqa", hotpot),
        ("musique", [load_dataset(musique_path, f, sentence_turns=sentence_turns) for f in (FIRST_HOP, MULTI_HOP)]),
        ("doc2dial", [load_dataset(data_dir / "doc2dial" / "doc2dial_rc_val.csv.zip", GIVEN)]),
        ("nq_open", [load_dataset(data_dir / "nq_open" / "nq-open-oracle.jsonl.gz", GIVEN)]),
        ("locomo", [load_dataset(data_dir / "locomo" / "locomo10.zip", GIVEN)]),
        ("dstc11", [load_dataset(data_dir / "dstc11", GIVEN)]),
        ("orsharc", [load_dataset(orsharc / f"open_retrieval_sharc_{s}.json", GIVEN) for s in ("dev", "test")]),
    ]


def suite_without(named: Sequence[tuple[str, Sequence[Dataset]]], left_out: str, *, limit: int | None = None,
                  max_eval: int | None = 600) -> BenchSuite:
    """Train on every dataset but ``left_out`` (whole), evaluate on ``left_out`` only (capped per framing)."""
    names = [n for n, _ in named]
    suite = assemble_suite(named, eval_only=(left_out,), train_only=[n for n in names if n != left_out],
                           limit=limit, max_given_eval=max_eval)
    if max_eval is not None:
        suite.eval = {f: sorted(exs, key=lambda e: bucket(e.id, "loo-cap"))[:max_eval] for f, exs in suite.eval.items()}
    # a document a training dataset carries too (MuSiQue and HotpotQA share Wikipedia paragraphs) is that
    # dataset's as well: only what the left-out dataset alone carries stays out of training
    carried = {i for ex in suite.train for i in (*ex.positive_ids, *ex.negative_ids, *ex.exclude_ids)}
    return replace(suite, eval_only_docs=suite.eval_only_docs - carried)


@dataclass
class _Runs:
    ranked: dict[str, list[list[str]]] = field(default_factory=dict)
    gate_choices: list[str] = field(default_factory=list)
    rerank_ms: list[float] = field(default_factory=list)  # one per reranked list

    def add(self, method: str, ids: list[str]) -> None:
        self.ranked.setdefault(method, []).append(ids)


async def _evaluate(retriever: PredictiveRetriever, examples: Sequence[Example], vec: dict[str, np.ndarray],
                    adapter: LinearAdapter, gate: ConfidenceGate | None, alphas: Sequence[float],
                    label: str, bm25: BM25Ranker | None, hybrid: PredictiveRetriever | None,
                    reranker: Reranker | None = None) -> _Runs:
    from tqdm.auto import tqdm

    runs = _Runs()
    for ex in tqdm(examples, desc=f"searching {label}", unit="q", mininterval=5.0):
        q = vec[ex.query]  # D
        excl = list(ex.exclude_ids)
        flt = scope_filter(ex.scope) if ex.scope else None
        res = await retriever.search(list(ex.context), ex.query, k=K_EVAL, filter=flt, exclude_ids=excl)
        runs.add("predictor", res.doc_ids)
        base = {"query_baseline": q, "linear_adapter": adapter.transform(q[None])[0]}
        if ex.framing != FIRST_HOP:
            base["concat_baseline"] = vec[" ".join([*ex.context, ex.query])]
        if alphas:
            pred = await retriever.predict_vector(list(ex.context), ex.query, filter=flt, exclude_ids=excl)  # D
            for a in alphas:
                base[f"blend_{a:g}"] = blend_vectors(pred, q, a)
        scores: list[float] = []
        query_ids: list[str] = []
        for name, v in base.items():
            r = await retriever.search_baseline(v, k=K_EVAL, filter=flt, exclude_ids=excl)
            runs.add(name, r.doc_ids)
            if name == "query_baseline":
                scores, query_ids = [h.score for h in r], r.doc_ids
        if bm25 is not None:  # BM25 alone, for reference
            runs.add("bm25", bm25.rank(ex.query, K_EVAL, scope=ex.scope, exclude_ids=excl))
        if hybrid is not None and hybrid.bm25 is not None:  # the peers a user would build, fused in the store
            sq = hybrid.bm25.embed_query(ex.query)
            hq = await hybrid.store.search(q, K_EVAL, filter=flt, exclude_ids=excl, sparse=sq)
            runs.add("hybrid_query", [d.doc_id for d in hq])
            hp = await hybrid.search(list(ex.context), ex.query, k=K_EVAL, filter=flt, exclude_ids=excl)
            runs.add("hybrid_predictor", hp.doc_ids)
            if reranker is not None:  # the opt-in second stage over each hybrid row's top N
                for name, docs in (("hybrid_query", list(hq)),
                                   ("hybrid_predictor", [ScoredDoc(h.doc_id, h.score, h.payload) for h in hp])):
                    t0 = time.perf_counter()
                    reranked = reranker.rerank(ex.query, docs)
                    runs.rerank_ms.append((time.perf_counter() - t0) * 1000)
                    runs.add(f"{name}+rerank", [d.doc_id for d in reranked])
        if gate is not None:
            choice = gate.choose([h.score for h in res], scores)
            runs.gate_choices.append(choice)
            runs.add("gate", res.doc_ids if choice == "predicted" else query_ids)
    return runs


def _train_examples(suite: BenchSuite, opts: LeaveOneOutOptions) -> BenchSuite:
    if not opts.foreign_history:
        return suite
    extra = foreign_history_examples(suite.train, opts.foreign_history, seed=opts.seed)
    sources = {**suite.sources, "foreign_history": {"train": len(extra), "eval": 0}}
    return replace(suite, train=[*suite.train, *extra], sources=sources)


async def _run_one(left_out: str, suite: BenchSuite, opts: LeaveOneOutOptions, encoder: CachedEncoder,
                   enc_corpus: EncodedCorpus, graph: LinkGraph, store: VectorStore,
                   bm25: BM25Ranker | None) -> dict[str, Any]:
    out = opts.out / f"without_{left_out}"
    t0 = time.perf_counter()
    train_suite = _train_examples(suite, opts)
    record = out / "training.json"
    reuse = json.loads(record.read_text(encoding="utf-8")) if opts.reuse and record.exists() else None
    if record.exists() and not opts.reuse:
        record.unlink()  # this run's own record, rewritten below once its training has finished
    ckpt, adapter, info = train_with_recipe(train_suite, encoder, enc_corpus, out, opts.recipe, seed=opts.seed,
                                            graph=graph, reuse=reuse)
    t_train = time.perf_counter() - t0
    loaded = load_checkpoint(ckpt)
    if reuse is None:  # the checkpoint is complete (trained and calibrated): a later --loo-reuse may evaluate it
        record.write_text(json.dumps({**info, "weights_sha256": loaded.meta.weights_sha256}, default=str),
                          encoding="utf-8")
    elif reuse.get("weights_sha256") != loaded.meta.weights_sha256:
        raise RuntimeError(f"{ckpt}: its weights are not the ones {record} records; train again without --loo-reuse")
    calibration = loaded.meta.score_confidence
    backend = make_backend(loaded.model, "eager")  # the dense and the hybrid retriever search one after the other
    expansion = LinkExpansion.for_config(loaded.model.config, graph)
    retriever = PredictiveRetriever(backend, encoder, store, micro_batching=False, expansion=expansion,
                                    score_confidence=calibration, owns_store=False)
    hybrid = PredictiveRetriever(backend, encoder, store, micro_batching=False, expansion=expansion,
                                 score_confidence=calibration, owns_store=False, hybrid=True) if opts.hybrid else None
    gate = None if calibration is None else ConfidenceGate(calibration, opts.gate_margin)
    reranker = Reranker(CrossEncoder.packaged(), top_n=opts.rerank) if opts.rerank and hybrid is not None else None
    rerank_ms: list[float] = []
    eval_examples = [ex for exs in suite.eval.values() for ex in exs]
    texts = [t for ex in eval_examples for t in (*ex.context, ex.query, " ".join([*ex.context, ex.query]))]
    unique = list(dict.fromkeys(texts))
    vecs = encoder.encode(unique, batch_size=64)  # n × D
    vec = {t: vecs[i] for i, t in enumerate(unique)}
    t0 = time.perf_counter()
    framings: dict[str, Any] = {}
    async with retriever:
        for framing, examples in suite.eval.items():
            runs = await _evaluate(retriever, examples, vec, adapter, gate, opts.blend_alphas,
                                   f"{left_out}/{framing}", bm25, hybrid, reranker)
            rerank_ms += runs.rerank_ms
            gold = [set(ex.positive_ids) for ex in examples]
            framings[framing] = method_metrics(runs.ranked, gold)
            framings[framing]["gate_share_query"] = (runs.gate_choices.count("query") / len(runs.gate_choices)
                                                     if runs.gate_choices else None)
    if hybrid is not None:
        await hybrid.close()
    t_eval = time.perf_counter() - t0
    return {"left_out": left_out, "framings": framings, "n_train": len(train_suite.train),
            "sources": train_suite.sources, "training": info,
            "seconds": {"train": t_train, "evaluate": t_eval},
            "rerank_ms": None if not rerank_ms else {
                "top_n": opts.rerank, "n": len(rerank_ms), "p50": float(np.percentile(rerank_ms, 50)),
                "p95": float(np.percentile(rerank_ms, 95))}}


async def run_leave_one_out_async(data_dir: Path, opts: LeaveOneOutOptions) -> dict[str, Any]:
    """Run the protocol; write ``leave_one_out.json`` and ``leave_one_out.md`` under ``opts.out``."""
    t_start = time.perf_counter()
    opts.out.mkdir(parents=True, exist_ok=True)
    named = load_named(data_dir)
    suites = {d: suite_without(named, d, limit=opts.limit, max_eval=opts.max_eval) for d in opts.datasets}
    first = suites[opts.datasets[0]]
    # the pooled corpus is the same whichever dataset is left out: encode, link and index it once
    assert all(s.corpus.keys() == first.corpus.keys() for s in suites.values()), "the pooled corpus must not vary"
    encoder = CachedEncoder(load_encoder(opts.encoder))
    t0 = time.perf_counter()
    enc_corpus = EncodedCorpus(first.corpus, encoder)
    graph = LinkGraph.build(first.corpus.values(), show_progress=True)
    store = open_store(opts.store, path=opts.out / "store")
    report_index = await index_documents(store, [first.corpus[i] for i in enc_corpus.ids], encoder=encoder,
                                         optimize=False,  # exact search: no method loses to approximation
                                         bm25=Bm25Encoder() if opts.hybrid else None)
    bm25 = BM25Ranker([first.corpus[i] for i in enc_corpus.ids], show_progress=True) if opts.hybrid else None
    t_shared = time.perf_counter() - t0
    print(f"shared: corpus {len(first.corpus)} documents encoded, linked and indexed ({t_shared:.0f} s): "
          f"{report_index}")
    runs = []
    try:
        for d in opts.datasets:
            s = suites[d]
            print(f"\n=== without {d}: {len(s.train)} train examples, eval "
                  f"{', '.join(f'{f}: {len(v)}' for f, v in s.eval.items())}")
            runs.append(await _run_one(d, s, opts, encoder, enc_corpus, graph, store, bm25))
            report = _report(runs, opts, len(first.corpus), encoder.name, store.name, t_shared, t_start)
            write_reports(report, opts.out)  # after every run: a long protocol's finished rows are never lost
    finally:
        await store.close()
    report = _report(runs, opts, len(first.corpus), encoder.name, store.name, t_shared, t_start)
    print(write_reports(report, opts.out))
    return report


def _report(runs: list[dict[str, Any]], opts: LeaveOneOutOptions, corpus_size: int, encoder: str, store: str,
            t_shared: float, t_start: float) -> dict[str, Any]:
    return {"runs": runs, "corpus_size": corpus_size, "encoder": encoder, "store": store,
            "recipe": opts.recipe.describe(), "limit": opts.limit, "max_eval": opts.max_eval, "seed": opts.seed,
            "foreign_history": opts.foreign_history, "blend_alphas": list(opts.blend_alphas),
            "seconds": {"shared": t_shared, "total": time.perf_counter() - t_start}}


def run_leave_one_out(data_dir: Path, opts: LeaveOneOutOptions) -> dict[str, Any]:
    return asyncio.run(run_leave_one_out_async(data_dir, opts))



def options_from_args(args: Any, overrides: dict[str, Any]) -> LeaveOneOutOptions:
    """The protocol's options from ``bench``'s parsed arguments (``--quick``, ``--loo-datasets``, recipe flags)."""
    datasets = tuple(args.loo_datasets) if args.loo_datasets else None
    if args.quick:
        base = LeaveOneOutOptions.quick(args.out, datasets or ("orsharc", "dstc11"))
    else:
        base = LeaveOneOutOptions(out=args.out, datasets=datasets or LOO_DATASETS, limit=args.limit)
    return replace(base, recipe=replace(base.recipe, **overrides), store=args.store, seed=args.seed,
                   max_eval=args.max_eval if args.max_eval is not None else base.max_eval,
                   foreign_history=args.foreign_history, reuse=args.loo_reuse, encoder=args.encoder,
                   rerank=args.rerank)
