"""The optimised torch inference path: static shapes, torch.compile, half precision, context K/V cache.

:class:`OptimizedPredictor` wraps an :class:`~prime_retriever.model.predictor.EmbeddingPredictor` behind the
:class:`~prime_retriever.backends.inference.PredictorBackend` protocol (numpy in, numpy out):

* **static shapes** (``use_static_cache``): the batch is padded up to a fixed bucket
  (1, 2, 4, …, ``max_batch_size``) and the context up to ``max_context_length`` turns, with masks, so
  every call hits one of a handful of shapes. Padded turns are masked out of attention and out of the
  recency positions, and padded rows only ever attend to themselves, so padding never changes a real
  row's output. A batch larger than ``max_batch_size`` runs in chunks.
* **torch.compile** (``use_torch_compile``): ``fullgraph=True, dynamic=False, mode=config.compile_mode``,
  compiled once per bucket and warmed up at creation time (``dynamic=True`` without static buffers,
  where every shape arrives as it is). On by default on CUDA where Triton supports the GPU (compute
  capability ≥ 7.0); on a GPU it does not support, it warns and runs uncompiled. On CUDA the
  default ``'reduce-overhead'`` mode captures CUDA graphs; the ``sdpa_kernel`` backends follow the
  device.
* **precision**: fp16 on CUDA, bf16 on CPUs with native bf16 support (cosine to fp32 eager ≥ 0.999),
  or int8 dynamic quantisation of the Linear layers on CPU (``precision='int8'``).
* **context K/V cache** (``attention_layout='prefix'``): :meth:`OptimizedPredictor.prepare` computes the
  per-layer context K/V into pre-allocated fixed-shape buffers (layers × max_batch × heads × max_context
  × head_dim); :meth:`OptimizedPredictor.predict_prepared` then runs only [PRED] and the query.

Why the CPU default (measured by ``prime-retriever bench-latency``, see its JSON report): at batch 1
the default model (≈208 M parameters, 830 MB in fp32) is memory-bandwidth bound, so latency is set by
the bytes of weights read per call. The narrowest weights that keep the accuracy bar win:
:func:`create_optimized_predictor` therefore returns, on CPU, the int8 (per-channel 7-bit weights,
dynamically quantised; 7 bits so that CPUs without VNNI cannot saturate) ONNX graph run by onnxruntime —
a quarter of the fp32 bytes, with ORT's int8 GEMMs and fused graph; cosine to fp32 eager ≥ 0.999 on
random weights (bar for int8: 0.99). Measured on a shared 2-core AVX512-VNNI/BF16 EPYC, 1 thread,
batch 1: ≈8-30× faster than eager fp32 and 2-3× faster than torch bf16. torch's own dynamic int8
(``precision='int8'``) is within noise of it at batch 1
(interleaved A/B: 31 vs 35 ms p50 under load) but loses 3-4× more accuracy (cosine ≈0.9988 vs ≈0.9996)
and rests on the deprecated ``torch.ao.quantization`` API, so ONNX int8 is the default.
The torch :class:`OptimizedPredictor` (``backend='torch'``)
stays the path for CUDA and for the context K/V cache. torch.compile is off on CPU by default: at these
shapes the time is in the GEMMs, which inductor hands to the same oneDNN/aten kernels, and compiling
costs tens of seconds per bucket; pass ``use_torch_compile=True`` to force it.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from prime_retriever.backends.inference import ConfigDims
from prime_retriever.backends.validation import validate_arrays
from prime_retriever.errors import PredictorError
from prime_retriever.model.config import PredictorConfig
from prime_retriever.model.predictor import (
    ContextKV,
    EmbeddingPredictor,
    PredictorOutputs,
)

Precision = Literal["auto", "fp32", "bf16", "fp16", "int8"]

__all__ = [
    "FastPathOptions",
    "OptimizedPredictor",
    "Precision",
    "batch_buckets",
    "compile_works_on",
    "cpu_supports_bf16",
]


# ---------------------------------------------------------------------------------------------- helpers
def batch_buckets(max_batch_size: int) -> list[int]:
    """The padded batch sizes: 1, 2, 4, … up to and including ``max_batch_size``."""
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1; got {max_batch_size}")
    out = [1 << i for i in range(int(math.log2(max_batch_size)) + 1)]
    if out[-1] != max_batch_size:
        out.append(max_batch_size)
    return out


def cpu_supports_bf16() -> bool:
    """Whether this CPU runs bf16 GEMMs natively (AVX512-BF16 / AMX), so bf16 is fast, not emulated."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _sdpa_backends(device: torch.device) -> list[SDPBackend]:
    """SDPA kernels allowed on ``device`` (the first that supports the inputs runs)."""
    if device.type == "cuda":
        # flash attention takes no arbitrary mask; memory-efficient does, the math kernel is the fallback
        return [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    return [SDPBackend.FLASH_ATTENTION, SDPBackend.MATH]  # the CPU flash kernel accepts masks


def compile_works_on(device: torch.device) -> bool:
    """Whether torch.compile can generate code for ``device``: on CUDA it needs Triton installed and
    a GPU of compute capability ≥ 7.0 (older GPUs raise ``GPUTooOldForTriton``)."""
    if device.type != "cuda":
        return True
    try:
        from torch.utils._triton import has_triton
    except ImportError:  # a torch without the helper: assume the default toolchain
        return True
    return bool(has_triton())


def _resolve_precision(precision: Precision, device: torch.device) -> Precision:
    if precision != "auto":
        if precision == "fp16" and device.type == "cpu":
            raise PredictorError("precision='fp16' is for CUDA; use 'bf16' on CPU")
        if precision == "int8" and device.type != "cpu":
            raise PredictorError("precision='int8' (dynamic quantisation) runs on CPU only")
        return precision
    if device.type == "cuda":
        return "fp16"
    return "bf16" if device.type == "cpu" and cpu_supports_bf16() else "fp32"


_DTYPE: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "int8": torch.float32,  # int8 weights, fp32 activations
}


def _quantize_int8(model: EmbeddingPredictor) -> EmbeddingPredictor:
    """Dynamic int8 quantisation of every Linear (per-channel weights, fp32 activations), CPU only, in place."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notice (the API is kept in 2.x)
        q: EmbeddingPredictor = quantize_dynamic(  # type: ignore[no-untyped-call]
            model, {nn.Linear: per_channel_dynamic_qconfig}, inplace=True
        )
    return q


# ---------------------------------------------------------------------------------------------- predictor
@dataclass(frozen=True)
class FastPathOptions:
    """The fast torch path's knobs; ``None`` follows the model's config (see :class:`OptimizedPredictor`).

    ``precision``: ``'auto'`` is fp16 on CUDA, bf16 on a CPU with native bf16, else fp32;
    ``use_torch_compile``: CUDA only by default (on CPU it does not pay for its compile time);
    ``buckets``: the padded batch sizes (default 1, 2, 4, … up to the config's ``max_batch_size``);
    ``warmup``: run every bucket once at construction.
    """

    precision: Precision = "auto"
    use_static_cache: bool | None = None
    use_torch_compile: bool | None = None
    compile_mode: str | None = None
    buckets: Sequence[int] | None = None
    warmup: bool = True


class OptimizedPredictor(ConfigDims):
    """Static-shape, compiled, reduced-precision predictor behind the PredictorBackend protocol.

    Build it with :func:`create_optimized_predictor`. ``predict`` takes numpy arrays (context B × N × D,
    query B × D, optional mask B × N bool) and returns ``(embedding B × O float32, confidence B float32)``.
    """

    def __init__(
        self, model: EmbeddingPredictor, *, device: str | torch.device | None = None,
        options: FastPathOptions | None = None,
    ) -> None:
        opts = options if options is not None else FastPathOptions()
        precision, use_static_cache, use_torch_compile = opts.precision, opts.use_static_cache, opts.use_torch_compile
        compile_mode, buckets, warmup = opts.compile_mode, opts.buckets, opts.warmup
        cfg = model.config
        self.config: PredictorConfig = cfg
        self.device = torch.device(device) if device is not None else model.device
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise PredictorError("device 'cuda' requested but CUDA is not available")
        self.precision: Precision = _resolve_precision(precision, self.device)
        self.dtype: torch.dtype = _DTYPE[self.precision]
        self.use_static_cache = cfg.use_static_cache if use_static_cache is None else use_static_cache
        compile_default = cfg.use_torch_compile and self.device.type == "cuda"
        if use_torch_compile is None and compile_default and not compile_works_on(self.device):
            warnings.warn(
                f"torch.compile cannot generate code for {self.device} (Triton missing, or compute capability "
                "< 7.0): running uncompiled; pass use_torch_compile=True to force it",
                stacklevel=2,
            )
            compile_default = False
        self.use_torch_compile = compile_default if use_torch_compile is None else use_torch_compile
        if self.precision == "int8":
            self.use_torch_compile = False  # quantized ops are not traced by dynamo's fullgraph mode
        self.compile_mode = compile_mode or cfg.compile_mode
        self.max_batch_size = cfg.max_batch_size
        self.buckets: list[int] = sorted(set(buckets)) if buckets else batch_buckets(cfg.max_batch_size)
        if self.buckets[-1] > cfg.max_batch_size or self.buckets[0] < 1:
            raise PredictorError(f"buckets must lie in [1, {cfg.max_batch_size}]; got {self.buckets}")
        self.max_batch_size = self.buckets[-1]
        self.prefix = cfg.attention_layout == "prefix" and cfg.block_type == "standard"

        # a private copy: the caller's model keeps its device and dtype
        m = copy.deepcopy(model).eval()
        for p in m.parameters():
            p.requires_grad_(False)
        m = _quantize_int8(m.to("cpu", torch.float32)) if self.precision == "int8" else m.to(self.device, self.dtype)
        self.model: EmbeddingPredictor = m
        self._sdpa = _sdpa_backends(self.device)

        parts = [self.precision, "static" if self.use_static_cache else "dynamic"]
        if self.use_torch_compile:
            parts.append(f"compiled[{self.compile_mode}]")
        self.name = "optimized-" + "-".join(parts)

        # compiled (or plain) callables, one per bucket
        self._full: dict[int, Callable[..., PredictorOutputs]] = {}
        self._query: dict[int, Callable[..., PredictorOutputs]] = {}
        self._encode: dict[int, Callable[..., ContextKV]] = {}
        # pre-allocated static inputs, one set per bucket: context B × N × D, query B × D, mask B × N
        self._inputs: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        N, D = cfg.max_context_length, cfg.input_dim
        if self.use_static_cache:
            for b in self.buckets:
                self._inputs[b] = (
                    torch.zeros(b, N, D, device=self.device, dtype=self.dtype),
                    torch.zeros(b, D, device=self.device, dtype=self.dtype),
                    torch.ones(b, N, device=self.device, dtype=torch.bool),
                )
        # the context K/V cache (prefix layout): layers × max_batch × h × N × d, fixed shape
        self._kv_keys: torch.Tensor | None = None
        self._kv_values: torch.Tensor | None = None
        self._kv_mask: torch.Tensor | None = None  # max_batch × N bool
        self._prepared_batch = 0  # real rows of the prepared context
        self._prepared_bucket = 0
        self._kv_n = 0  # context slots held in the cache
        if self.prefix:
            shape = (cfg.num_layers, self.max_batch_size, cfg.num_heads, N, cfg.head_dim)
            kv_dtype = torch.float32 if self.precision == "int8" else self.dtype
            self._kv_keys = torch.zeros(shape, device=self.device, dtype=kv_dtype)
            self._kv_values = torch.zeros(shape, device=self.device, dtype=kv_dtype)
            self._kv_mask = torch.ones(self.max_batch_size, N, device=self.device, dtype=torch.bool)
        if self.use_torch_compile:
            # dynamo counts graphs per function across every instance in the process (it guards on
            # the model): make room for this one's, a static-shape graph per bucket and function
            limit = int(getattr(torch._dynamo.config, "recompile_limit", 8))
            torch._dynamo.config.recompile_limit = limit + 2 * len(self.buckets) + 2
        if warmup:
            self.warmup()

    # ------------------------------------------------------------------ compilation
    def _compile(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        if not self.use_torch_compile:
            return fn
        # without static buffers every (batch, turns) shape arrives as it is: compile one graph with
        # symbolic shapes, or each new shape would recompile until the limit stops predict() for good
        return torch.compile(fn, fullgraph=True, dynamic=not self.use_static_cache, mode=self.compile_mode)

    def _full_fn(self, bucket: int) -> Callable[..., PredictorOutputs]:
        if bucket not in self._full:
            self._full[bucket] = self._compile(self.model.predict)
        return self._full[bucket]

    def _query_fn(self, bucket: int) -> Callable[..., PredictorOutputs]:
        if bucket not in self._query:
            self._query[bucket] = self._compile(self.model.predict_from_context)
        return self._query[bucket]

    def _encode_fn(self, bucket: int) -> Callable[..., ContextKV]:
        if bucket not in self._encode:
            self._encode[bucket] = self._compile(self.model.encode_context)
        return self._encode[bucket]

    def _bucket(self, B: int) -> int:
        return next(b for b in self.buckets if b >= B)

    # ------------------------------------------------------------------ static inputs
    def _fill(
        self, c: np.ndarray, q: np.ndarray, m: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """Copy a chunk (B ≤ max batch) into its bucket's static buffers; return them and the bucket.

        Padded turns: zeros, mask False. Padded rows: zeros with one real turn, so their softmax stays
        finite; real rows never attend to another row, so padding cannot change their output.
        """
        B, N, _ = c.shape
        if not self.use_static_cache:
            ct = torch.from_numpy(c).to(self.device, self.dtype)  # B × N × D
            qt = torch.from_numpy(q).to(self.device, self.dtype)  # B × D
            mt = torch.from_numpy(m).to(self.device)  # B × N
            return ct, qt, mt, B
        bucket = self._bucket(B)
        ctx, qry, mask = self._inputs[bucket]  # b × Nmax × D, b × D, b × Nmax
        ctx.zero_()
        qry.zero_()
        mask.fill_(False)
        mask[:, 0] = True
        ctx[:B, :N].copy_(torch.from_numpy(c))
        qry[:B].copy_(torch.from_numpy(q))
        mask[:B, :N].copy_(torch.from_numpy(m))
        return ctx, qry, mask, bucket

    # ------------------------------------------------------------------ inference
    def _run_chunk(self, c: np.ndarray, q: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        B = c.shape[0]
        ctx, qry, mask, bucket = self._fill(c, q, m)
        with torch.inference_mode(), sdpa_kernel(self._sdpa):
            out = self._full_fn(bucket)(ctx, qry, mask)
            emb = out.embedding[:B].float().cpu().numpy()  # B × O (a copy: CUDA-graph outputs are reused)
            conf = torch.sigmoid(out.confidence_logit[:B].float()).cpu().numpy()  # B
        return emb, conf

    def predict(
        self, context: np.ndarray, query: np.ndarray, context_mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(embedding B × O float32, confidence B float32)``; raises PredictorError on bad input."""
        c, q, m = validate_arrays(self.config, context, query, context_mask)
        step = self.max_batch_size
        parts = [self._run_chunk(c[i : i + step], q[i : i + step], m[i : i + step]) for i in range(0, len(c), step)]
        if len(parts) == 1:
            return parts[0]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    # ------------------------------------------------------------------ context K/V cache
    def _require_prefix(self) -> None:
        if not self.prefix:
            raise PredictorError(
                "the context K/V cache needs attention_layout='prefix' and block_type='standard'; "
                f"got attention_layout={self.config.attention_layout!r}, block_type={self.config.block_type!r}"
            )

    def prepare(self, context: np.ndarray, context_mask: np.ndarray | None = None) -> None:
        """Compute the per-layer context K/V (B ≤ max_batch_size rows) into the fixed-shape cache.

        ``context`` is B × N × D, ``context_mask`` B × N bool. Call :meth:`predict_prepared` with the
        B queries afterwards; the cache holds one prepared batch at a time.
        """
        self._require_prefix()
        assert self._kv_keys is not None and self._kv_values is not None and self._kv_mask is not None
        try:
            B = int(np.shape(context)[0])
        except (IndexError, TypeError, ValueError):
            B = 0
        dummy_q = np.zeros((B, self.config.input_dim), np.float32)  # B × D, only for validation
        c, _, m = validate_arrays(self.config, context, dummy_q, context_mask)
        if self.max_batch_size < B:
            raise PredictorError(f"prepare() takes at most max_batch_size={self.max_batch_size} rows; got B={B}")
        ctx, _, mask, bucket = self._fill(c, dummy_q, m)
        Nc = ctx.shape[1]
        with torch.inference_mode(), sdpa_kernel(self._sdpa):
            kv = self._encode_fn(bucket)(ctx, mask)  # keys/values: layers × b × h × Nc × d
            self._kv_keys[:, :bucket, :, :Nc].copy_(kv.keys)
            self._kv_values[:, :bucket, :, :Nc].copy_(kv.values)
            self._kv_mask[:bucket, :Nc].copy_(mask)
        self._kv_n = Nc
        self._prepared_batch = B
        self._prepared_bucket = bucket

    def predict_prepared(self, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run only [PRED] and the query (B × D) against the prepared context K/V."""
        self._require_prefix()
        assert self._kv_keys is not None and self._kv_values is not None and self._kv_mask is not None
        if self._prepared_batch == 0:
            raise PredictorError("no prepared context: call prepare(context, mask) first")
        B, bucket = self._prepared_batch, self._prepared_bucket
        ctx1 = np.zeros((B, 1, self.config.input_dim), np.float32)
        _, q, _ = validate_arrays(self.config, ctx1, query, None)
        Nc = self._kv_n
        if self.use_static_cache:
            qry = self._inputs[bucket][1]  # bucket × D
            qry.zero_()
            qry[:B].copy_(torch.from_numpy(q))
        else:
            qry = torch.from_numpy(q).to(self.device, self.dtype)
        kv = ContextKV(
            self._kv_keys[:, :bucket, :, :Nc], self._kv_values[:, :bucket, :, :Nc], self._kv_mask[:bucket, :Nc]
        )
        with torch.inference_mode(), sdpa_kernel(self._sdpa):
            out = self._query_fn(bucket)(kv, qry)
            emb = out.embedding[:B].float().cpu().numpy()  # B × O
            conf = torch.sigmoid(out.confidence_logit[:B].float()).cpu().numpy()  # B
        return emb, conf

    # ------------------------------------------------------------------ warm-up
    def warmup(self, buckets: Sequence[int] | None = None) -> None:
        """Run (and so compile, and on CUDA capture) every bucket once, the K/V-cache path too."""
        D, N = self.config.input_dim, self.config.max_context_length
        sizes = list(buckets) if buckets is not None else (self.buckets if self.use_static_cache else [1])
        rng = np.random.default_rng(0)
        for b in sizes:
            c = rng.standard_normal((b, N, D)).astype(np.float32)
            q = rng.standard_normal((b, D)).astype(np.float32)
            for _ in range(3 if self.use_torch_compile and self.device.type == "cuda" else 1):
                self.predict(c, q)  # reduce-overhead records CUDA graphs on the 2nd-3rd call
                if self.prefix:
                    self.prepare(c)
                    self.predict_prepared(q)
        self._prepared_batch = 0
