"""``prime-retriever bench-latency [--out FILE.json] [--quick]``: every inference path, side by side.

One process, the same inputs for every path: eager fp32 (the reference), eager bf16, the optimised
torch predictor (static shapes, bf16; compiled; int8), ONNX fp32 and int8 through onnxruntime, and the
cached-context path (prefix layout: context K/V prepared beforehand, only [PRED] + query timed). Batches
1, 8 and 32 with N = 10 context turns, on the default config and on a small one.

Weights are random (latency does not depend on their values); the cosine is measured against eager
fp32 on the same inputs and the same weights. Paths are built, measured and freed one after another,
so the peak RSS of a path is the reference model plus that path. A path counts as "correct" when its
worst-row cosine to eager fp32 is >= 0.999 (>= 0.99 for int8 paths).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prime_retriever.backends.inference import EagerPredictor, PredictorBackend
from prime_retriever.cli.arg_types import positive_int, report_path
from prime_retriever.model.config import PredictorConfig
from prime_retriever.model.predictor import EmbeddingPredictor

__all__ = ["PathResult", "add_cli_arguments", "default_configs", "run_benchmark", "run_cli"]

COSINE_BAR = 0.999
COSINE_BAR_INT8 = 0.99
BATCHES = (1, 8, 32)
NUM_TURNS = 10


def default_configs() -> dict[str, PredictorConfig]:
    """The benchmarked configs: the spec default (≈208 M params) and a small one (hidden 512, 2 layers)."""
    return {
        "default": PredictorConfig(dropout=0.0, max_context_length=NUM_TURNS),
        "small": PredictorConfig(
            hidden_dim=512, num_layers=2, num_heads=8, dropout=0.0, max_context_length=NUM_TURNS, max_batch_size=32
        ),
    }


# ---------------------------------------------------------------------------------------------- memory
def _rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _peak_rss_mb() -> float:
    """High-water RSS since the last :func:`_reset_peak` (Linux), else since process start."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS


# ---------------------------------------------------------------------------------------------- results
@dataclass
class PathResult:
    """One path's figures: per batch p50/p95 ms and worst-row cosine to eager fp32."""

    name: str
    int8: bool = False
    batches: dict[int, dict[str, float]] = field(default_factory=dict)
    build_s: float = 0.0
    peak_rss_mb: float = 0.0  # high-water RSS while building and running this path (+ the fp32 reference)
    rss_mb: float = 0.0  # RSS after running it: steady-state inference memory (+ the fp32 reference)
    skipped: str | None = None
    note: str = ""

    def correct(self) -> bool:
        bar = COSINE_BAR_INT8 if self.int8 else COSINE_BAR
        return self.skipped is None and all(b["cosine"] >= bar for b in self.batches.values())

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {f"b{b}": v for b, v in self.batches.items()}
        out.update(
            build_s=round(self.build_s, 2),
            peak_rss_mb=round(self.peak_rss_mb, 1),
            rss_mb=round(self.rss_mb, 1),
            correct=self.correct(),
            int8=self.int8,
        )
        if self.skipped:
            out["skipped"] = self.skipped
        if self.note:
            out["note"] = self.note
        return out


def _time(fn: Callable[[], object], iters: int, warmup: int = 2) -> tuple[float, float]:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return float(np.percentile(ts, 50)), float(np.percentile(ts, 95))


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    # a, b: B × O
    num = (a * b).sum(-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-12
    return float((num / den).min())


# ---------------------------------------------------------------------------------------------- one config
def _inputs(cfg: PredictorConfig, batch: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((batch, NUM_TURNS, cfg.input_dim)).astype(np.float32)  # B × N × D
    q = rng.standard_normal((batch, cfg.input_dim)).astype(np.float32)  # B × D
    return c, q


def bench_config(
    cfg: PredictorConfig,
    *,
    batches: tuple[int, ...] = BATCHES,
    iters: dict[int, int] | None = None,
    with_compile: bool = True,
    with_onnx: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, PathResult]:
    """Measure every available path on ``cfg`` (random weights, seed 0)."""
    from prime_retriever.backends.fast import FastPathOptions, OptimizedPredictor, cpu_supports_bf16

    iters = iters or {1: 30, 8: 10, 32: 5}
    torch.manual_seed(0)
    base = EmbeddingPredictor(cfg).eval()
    torch.nn.init.normal_(base.confidence_head.weight, std=0.02)
    inputs = {b: _inputs(cfg, b, seed=b) for b in batches}
    bucket_list = sorted(set(batches))
    results: dict[str, PathResult] = {}
    ref: dict[int, np.ndarray] = {}

    def measure(name: str, build: Callable[[], PredictorBackend], *, int8: bool = False, cached: bool = False) -> None:
        res = PathResult(name, int8=int8)
        results[name] = res
        gc.collect()
        _reset_peak()
        t0 = time.perf_counter()
        try:
            backend = build()
        except Exception as e:  # a path that cannot be built on this machine is reported, not fatal
            res.skipped = f"{type(e).__name__}: {e}"[:300]
            log(f"  {name}: skipped ({res.skipped})")
            return
        res.build_s = time.perf_counter() - t0
        for b in batches:
            c, q = inputs[b]
            if cached:
                assert isinstance(backend, OptimizedPredictor)
                backend.prepare(c)
                emb, _ = backend.predict_prepared(q)
                p50, p95 = _time(functools.partial(backend.predict_prepared, q), iters.get(b, 5))
            else:
                emb, _ = backend.predict(c, q)
                p50, p95 = _time(functools.partial(backend.predict, c, q), iters.get(b, 5))
            if name == "eager-fp32":
                ref[b] = emb
            res.batches[b] = {"p50_ms": round(p50, 3), "p95_ms": round(p95, 3), "cosine": _min_cosine(emb, ref[b])}
        res.peak_rss_mb = _peak_rss_mb()
        res.rss_mb = _rss_mb()
        log(
            f"  {name}: "
            + "  ".join(f"b{b} p50 {v['p50_ms']:.1f} ms cos {v['cosine']:.5f}" for b, v in res.batches.items())
            + f"  (build {res.build_s:.1f} s, peak RSS {res.peak_rss_mb:.0f} MB, RSS {res.rss_mb:.0f} MB)"
        )
        del backend

    measure("eager-fp32", lambda: EagerPredictor(base))

    def eager_bf16() -> PredictorBackend:
        import copy

        return EagerPredictor(copy.deepcopy(base).to(torch.bfloat16))

    if cpu_supports_bf16():
        measure("eager-bf16", eager_bf16)
    else:
        results["eager-bf16"] = PathResult("eager-bf16", skipped="this CPU has no native bf16")

    def optimized(**kw: Any) -> Callable[[], PredictorBackend]:
        return lambda: OptimizedPredictor(base, device="cpu", options=FastPathOptions(buckets=bucket_list, **kw))

    measure("static-bf16", optimized(precision="auto", use_torch_compile=False))
    measure("static-fp32", optimized(precision="fp32", use_torch_compile=False))
    measure("torch-int8", optimized(precision="int8", use_torch_compile=False), int8=True)
    if with_compile:
        measure("compiled-bf16", optimized(precision="auto", use_torch_compile=True, compile_mode="default"))
    else:
        results["compiled-bf16"] = PathResult("compiled-bf16", skipped="--quick: torch.compile on CPU takes minutes")

    if with_onnx:
        from prime_retriever.backends.onnx import OnnxPredictor, export_onnx

        tmp = Path(tempfile.mkdtemp(prefix="prime_bench_onnx_"))
        try:
            onnx_path = tmp / "model.onnx"
            t0 = time.perf_counter()
            export_onnx(base, onnx_path)
            log(f"  (ONNX export {time.perf_counter() - t0:.1f} s)")
            measure("onnx-fp32", lambda: OnnxPredictor(onnx_path, cfg, optimize=True))
            measure("onnx-int8", lambda: OnnxPredictor(onnx_path, cfg, int8=True, optimize=True), int8=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # the cached-context path needs the prefix layout: same weights, reference = eager fp32 of that model
    pcfg = cfg.model_copy(update={"attention_layout": "prefix"})
    pmodel = EmbeddingPredictor(pcfg).eval()
    pmodel.load_state_dict(base.state_dict())
    saved = dict(ref)
    for b in batches:  # reference for the prefix model, not timed
        with torch.inference_mode():
            c, q = inputs[b]
            ref[b] = pmodel.predict(torch.from_numpy(c), torch.from_numpy(q)).embedding.numpy()
    measure(
        "cached-context",
        lambda: OptimizedPredictor(
            pmodel, device="cpu", options=FastPathOptions(buckets=bucket_list, use_torch_compile=False)
        ),
        cached=True,
    )
    results["cached-context"].note = "prefix layout; query-time only (context K/V prepared before the query)"
    ref.clear()
    ref.update(saved)
    return results


# ---------------------------------------------------------------------------------------------- report
def _summary(results: dict[str, PathResult]) -> dict[str, Any]:
    base = results["eager-fp32"].batches
    paths: dict[str, Any] = {}
    for name, r in results.items():
        j = r.to_json()
        for b, v in r.batches.items():
            if b in base:
                j[f"b{b}"]["speedup"] = round(base[b]["p50_ms"] / v["p50_ms"], 2)
        paths[name] = j
    full = [r for n, r in results.items() if n != "cached-context" and r.correct() and 1 in r.batches]
    best = min(full, key=lambda r: r.batches[1]["p50_ms"]) if full else results["eager-fp32"]
    peak = max((r.peak_rss_mb for r in results.values()), default=0.0)
    return {
        "paths": paths,
        "best_path": best.name,
        "speedup_b1_best": round(base[1]["p50_ms"] / best.batches[1]["p50_ms"], 2) if 1 in base else None,
        "best_b1_p50_ms": best.batches[1]["p50_ms"] if 1 in best.batches else None,
        "peak_rss_mb": round(peak, 1),
    }


def format_table(title: str, results: dict[str, PathResult]) -> str:
    """A fixed-width table: path, batch, p50, p95, speed-up over eager fp32, cosine, peak RSS."""
    base = results["eager-fp32"].batches
    lines = [
        title,
        f"{'path':<16}{'batch':>6}{'p50 ms':>10}{'p95 ms':>10}{'speedup':>9}{'cosine':>10}"
        f"{'peakRSS':>9}{'RSS MB':>8}  ok",
    ]
    for name, r in results.items():
        if r.skipped:
            lines.append(f"{name:<16}  skipped: {r.skipped[:90]}")
            continue
        for b, v in r.batches.items():
            sp = base[b]["p50_ms"] / v["p50_ms"] if b in base else float("nan")
            lines.append(
                f"{name:<16}{b:>6}{v['p50_ms']:>10.2f}{v['p95_ms']:>10.2f}{sp:>8.2f}x{v['cosine']:>10.5f}"
                f"{r.peak_rss_mb:>9.0f}{r.rss_mb:>8.0f}  {'yes' if r.correct() else 'NO'}"
            )
    return "\n".join(lines)


def run_benchmark(*, quick: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the benchmark; return the JSON-able report (default config at the top level, small under 'small')."""
    cfgs = default_configs()
    report: dict[str, Any] = {
        "note": "random weights (latency does not depend on them); cosine vs eager fp32 on the same inputs",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "num_turns": NUM_TURNS,
        "quick": quick,
    }
    if quick:
        log("[small] hidden 512, 2 layers (--quick)")
        small = bench_config(cfgs["small"], batches=(1, 8), iters={1: 5, 8: 3}, with_compile=False, log=log)
        report["small"] = _summary(small)
        log(format_table("small config", small))
        report.update(report["small"])  # the top-level keys exist in quick mode too
        report["config_at_top_level"] = "small"
        return report
    log("[default] hidden 2048, 4 layers")
    default = bench_config(cfgs["default"], log=log)
    log("[small] hidden 512, 2 layers")
    small = bench_config(cfgs["small"], iters={1: 50, 8: 20, 32: 10}, log=log)
    report.update(_summary(default))
    report["config_at_top_level"] = "default"
    report["small"] = _summary(small)
    log(format_table("default config (hidden 2048, 4 layers, ~208M params)", default))
    log(format_table("small config (hidden 512, 2 layers)", small))
    return report


# ---------------------------------------------------------------------------------------------- CLI
def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=report_path, help="write the JSON report to this file")
    parser.add_argument("--quick", action="store_true", help="small config only, few iterations, no compile")
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="torch and onnxruntime intra-op threads (default: torch's default). On a shared, "
        "oversubscribed machine 1 thread avoids OpenMP spin-wait stalls",
    )


def run_cli(args: argparse.Namespace) -> int:
    if args.threads is not None:
        torch.set_num_threads(args.threads)  # OnnxPredictor follows torch.get_num_threads()
    report = run_benchmark(quick=bool(args.quick))
    print(
        f"best path (b1): {report['best_path']}  p50 {report['best_b1_p50_ms']} ms  "
        f"speed-up {report['speedup_b1_best']}x over eager fp32  peak RSS {report['peak_rss_mb']} MB"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0
