"""``prime-retriever bench-encoder``: every text-encoder path side by side on the same HotpotQA texts.

For each path (fp32 eager, ONNX fp32, ONNX int8, and the packaged bge/e5 int8 exports when their
files are installed), on one corpus of shipped HotpotQA paragraphs and its first_hop questions:
corpus texts/s (a fresh encode, no cache), ms per query at batch 1 (p50/p95), cosine to fp32 eager
(mean and worst, over the paragraphs and the questions), the process's peak RSS while the path
encodes, and retrieval on the first_hop framing: the raw query embedding's P@5/MRR and, for the
checkpoint's own encoder model, the checkpoint's (served as trained: link expansion on its graph).
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from prime_retriever.errors import DataError
from prime_retriever.text.documents import Document
from prime_retriever.text.encoders import TextEncoder

__all__ = ["EncoderBenchOptions", "FirstHopSet", "load_first_hop", "markdown_table", "run_encoder_bench"]

FloatMatrix = npt.NDArray[np.float32]


@dataclass(frozen=True)
class EncoderBenchOptions:
    data_dir: Path
    docs: int = 2000
    questions: int = 500
    query_latency: int = 200  # batch-1 query encodes timed per path
    checkpoint: Path | None = None
    links: Path | None = None
    paths: tuple[str, ...] = ("eager", "onnx-fp32", "onnx-int8", "bge-small-en-v1.5", "e5-small-v2")
    seed: int = 0
    files: tuple[str, ...] = ()  # HotpotQA files under hotpotqa/ to read (default: all of them, pooled)


@dataclass
class FirstHopSet:
    docs: list[Document]
    questions: list[str]
    gold: list[set[str]]


def load_first_hop(data_dir: Path, n_docs: int, n_questions: int, seed: int,
                   files: Sequence[str] = ()) -> FirstHopSet:
    """``n_questions`` first_hop questions drawn at random, and a corpus of their paragraphs (gold and
    distractors) topped up with other paragraphs, or cut (never a gold one), to ``n_docs``; ``files``
    (names under ``hotpotqa/``) replaces the pool of every HotpotQA file."""
    from training.data.examples import FIRST_HOP
    from training.data.hotpotqa import hotpotqa_files, load_hotpotqa_pool

    if not (data_dir / "hotpotqa").is_dir():
        raise DataError(f"no hotpotqa/ under {data_dir}; set PRIME_DATA_DIR")
    paths = [data_dir / "hotpotqa" / f for f in files] if files else hotpotqa_files(data_dir)
    ds = load_hotpotqa_pool(paths, FIRST_HOP)
    rng = random.Random(seed)
    examples = [e for e in ds.examples if all(p in ds.corpus for p in e.positive_ids)]
    rng.shuffle(examples)
    chosen = examples[:n_questions]
    gold_ids = list(dict.fromkeys(p for e in chosen for p in e.positive_ids))
    others = list(dict.fromkeys(n for e in chosen for n in e.negative_ids if n in ds.corpus and n not in gold_ids))
    rest = [d for d in ds.corpus if d not in set(gold_ids) | set(others)]
    rng.shuffle(rest)
    ids = (gold_ids + others + rest)[: max(n_docs, len(gold_ids))]
    return FirstHopSet([ds.corpus[i] for i in ids], [e.query for e in chosen], [set(e.positive_ids) for e in chosen])


def _rss_mb(field: str) -> float:
    try:
        with open("/proc/self/status", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _reset_peak_rss() -> None:
    """Linux: reset VmHWM to the current RSS, so the next peak is this path's."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="utf-8") as fh:
            fh.write("5")
    except OSError:
        pass


def _queries(enc: TextEncoder, texts: Sequence[str]) -> FloatMatrix:
    fn = getattr(enc, "encode_queries", None)
    out = fn(list(texts), show_progress=False) if callable(fn) else enc.encode(list(texts), show_progress=False)
    return np.asarray(out, np.float32)


def _ranking(pred: FloatMatrix, corpus: FloatMatrix, ids: list[str], gold: list[set[str]], k: int = 5
             ) -> dict[str, float]:
    """P@k and MRR of unit predictions (Q × D) over the corpus (C × D) by exact cosine."""
    scores = pred @ corpus.T  # Q × C
    order = np.argsort(-scores, axis=1, kind="stable")
    p_at, rr = [], []
    for i, g in enumerate(gold):
        ranked = [ids[j] for j in order[i]]
        p_at.append(sum(d in g for d in ranked[:k]) / k)
        rr.append(next((1.0 / (r + 1) for r, d in enumerate(ranked) if d in g), 0.0))
    return {"p_at_5": float(np.mean(p_at)), "mrr": float(np.mean(rr))}


def _predicted(model: Any, expansion: Any, corpus: FloatMatrix, ids: list[str], questions: list[str],
               q: FloatMatrix) -> FloatMatrix:
    """The checkpoint's predictions for first_hop (context = [question]), with its link expansion."""
    from prime_retriever.backends.inference import EagerPredictor

    backend = EagerPredictor(model)
    vectors = dict(zip(ids, corpus, strict=True))
    out = np.zeros_like(q)
    top = np.argmax(q @ corpus.T, axis=1)  # the seed: the query's top hit
    for i, text in enumerate(questions):
        ctx = q[i : i + 1]  # 1 × D
        if expansion is not None:
            seeds = [ids[int(top[i])]][: expansion.seeds]
            picked = expansion.select(q[i], expansion.graph.candidates([text, text], seeds), vectors)
            if picked:
                ctx = np.concatenate([np.stack([vectors[c] for c in picked]), ctx])  # (C + 1) × D
        emb, _ = backend.predict(ctx[None], q[i : i + 1])
        out[i] = emb[0]
    return out


def _build(path: str) -> TextEncoder:
    from prime_retriever.text.fast_encoder import load_encoder

    return load_encoder(path)


def run_encoder_bench(opts: EncoderBenchOptions) -> dict[str, Any]:
    """Measure every path of ``opts.paths`` (those that cannot load are reported as skipped)."""
    from prime_retriever.errors import EncoderError
    from prime_retriever.text.fast_encoder import choose_fast, cosine_scores

    data = load_first_hop(opts.data_dir, opts.docs, opts.questions, opts.seed, opts.files)
    texts = [d.encoding_text for d in data.docs]
    ids = [d.id for d in data.docs]
    model = expansion = None
    if opts.checkpoint is not None:
        from prime_retriever.model.checkpoint import load_checkpoint
        from prime_retriever.retrieval.link_graph import LinkExpansion, LinkGraph

        loaded = load_checkpoint(opts.checkpoint)
        model = loaded.model
        if model.config.link_candidates:
            graph = LinkGraph.load(opts.links) if opts.links else LinkGraph.build(data.docs)
            expansion = LinkExpansion.for_config(model.config, graph)
    results: dict[str, Any] = {"docs": len(texts), "questions": len(data.questions), "paths": {}, "skipped": {}}
    reference: tuple[FloatMatrix, FloatMatrix] | None = None
    timed = data.questions[: opts.query_latency]
    for path in opts.paths:
        try:
            enc = _build(path)
        except EncoderError as exc:
            results["skipped"][path] = str(exc)
            print(f"[bench-encoder] {path}: skipped ({exc})", flush=True)
            continue
        enc.encode(texts[:8], show_progress=False)  # warm the session / the torch kernels
        _reset_peak_rss()
        t0 = time.perf_counter()
        corpus = np.asarray(enc.encode(texts, batch_size=64, show_progress=True), np.float32)  # C × D
        seconds = time.perf_counter() - t0
        peak = _rss_mb("VmHWM")
        q = _queries(enc, data.questions)  # Q × D
        lat = []
        for text in timed:
            t1 = time.perf_counter()
            _queries(enc, [text])
            lat.append(time.perf_counter() - t1)
        row: dict[str, Any] = {
            "name": enc.name, "texts_per_s": len(texts) / seconds, "encode_s": seconds,
            "query_p50_ms": 1000 * float(np.percentile(lat, 50)), "query_p95_ms": 1000 * float(np.percentile(lat, 95)),
            "peak_rss_mb": peak, "cosine_mean": None, "cosine_min": None,
            "query_only": _ranking(q, corpus, ids, data.gold),
        }
        same_model = getattr(enc, "model_name", enc.name) == "sentence-transformers/all-MiniLM-L6-v2"
        if path == "eager":
            reference = (corpus, q)
        if reference is not None and same_model:
            both = cosine_scores(np.concatenate(reference), np.concatenate([corpus, q]))
            row["cosine_mean"], row["cosine_min"] = both
        if model is not None and same_model:
            row["predictor"] = _ranking(_predicted(model, expansion, corpus, ids, data.questions, q), corpus, ids,
                                        data.gold)
        results["paths"][path] = row
        print(f"[bench-encoder] {path}: {row['texts_per_s']:.1f} texts/s, query p50 {row['query_p50_ms']:.1f} ms",
              flush=True)
        del enc
    results["baseline"] = "eager"
    fast = choose_fast()
    results["chosen"] = {"torch-fp32": "eager"}.get(fast.backend, fast.backend)
    results["fast_scores"] = [vars(s) for s in fast.scores]
    return results


def _f(x: Any, fmt: str) -> str:
    return "–" if x is None else format(x, fmt)


def markdown_table(results: dict[str, Any]) -> str:
    """The results as a markdown table (speed-ups against the baseline path)."""
    base = results["paths"].get(results["baseline"], {})
    lines = [
        "| path | texts/s | × eager | query p50 / p95 ms | cosine mean / worst | peak RSS MB "
        "| query P@5 / MRR | predictor P@5 / MRR |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for path, r in results["paths"].items():
        speed = r["texts_per_s"] / base["texts_per_s"] if base else None
        pred = r.get("predictor")
        mark = " (chosen)" if path == results.get("chosen") else ""
        lines.append(
            f"| {path}{mark} | {r['texts_per_s']:.1f} | {_f(speed, '.2f')} | {r['query_p50_ms']:.1f} / "
            f"{r['query_p95_ms']:.1f} | {_f(r['cosine_mean'], '.4f')} / {_f(r['cosine_min'], '.4f')} | "
            f"{r['peak_rss_mb']:.0f} | {r['query_only']['p_at_5']:.3f} / {r['query_only']['mrr']:.3f} | "
            + (f"{pred['p_at_5']:.3f} / {pred['mrr']:.3f} |" if pred else "– |")
        )
    return "\n".join(lines)
