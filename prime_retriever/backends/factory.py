"""The one backend factory: a :class:`~prime_retriever.backends.inference.PredictorBackend` for a model.

:func:`make_backend` names a backend (``eager``, ``fast``, ``compiled``, ``onnx``);
:func:`create_optimized_predictor` picks the fastest correct path for a device.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Literal

import torch

from prime_retriever.backends.fast import FastPathOptions, OptimizedPredictor
from prime_retriever.backends.inference import EagerPredictor, PredictorBackend
from prime_retriever.backends.onnx import OnnxPredictor, export_onnx
from prime_retriever.errors import PredictorError
from prime_retriever.model.checkpoint import load_checkpoint
from prime_retriever.model.config import PredictorConfig
from prime_retriever.model.predictor import EmbeddingPredictor

__all__ = ["Backend", "create_optimized_predictor", "make_backend"]

Backend = Literal["auto", "torch", "onnx"]


def _onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def create_optimized_predictor(
    config_or_model: PredictorConfig | EmbeddingPredictor,
    *,
    device: str | torch.device | None = None,
    backend: Backend = "auto",
    options: FastPathOptions | None = None,
    num_threads: int | None = None,
    onnx_dir: str | Path | None = None,
) -> OptimizedPredictor | OnnxPredictor:
    """Build the fastest correct predictor for ``device`` (default: CUDA if available, else CPU).

    ``config_or_model``: a model, or a config (random weights unless ``config.checkpoint_path`` is set,
    in which case the checkpoint is loaded).

    ``backend``:

    * ``'auto'`` (default): on CUDA the torch :class:`OptimizedPredictor` (fp16, static shapes, CUDA
      graphs); on CPU the int8 ONNX graph through onnxruntime when onnxruntime is installed and
      ``precision`` is ``'auto'`` or ``'int8'`` — the fastest correct CPU path measured by
      ``prime-retriever bench-latency`` (the batch-1 forward is weight-bandwidth bound, int8 weights are a
      quarter of fp32, and ORT's int8 GEMMs beat torch's dynamic quantisation; cosine to fp32 ≥ 0.999 on
      random weights, bar 0.99) — otherwise the torch predictor in bf16.
    * ``'torch'``: :class:`OptimizedPredictor` (needed for the context K/V cache: ``prepare`` /
      ``predict_prepared``). Its defaults follow the config (``use_static_cache``, ``use_torch_compile`` —
      CUDA only by default, on CPU it does not pay for its compile time — and ``compile_mode``);
      ``precision='auto'``: fp16 on CUDA, bf16 on a CPU with native bf16, else fp32.
    * ``'onnx'``: export to ``onnx_dir`` (a temporary directory by default) and run
      :class:`~prime_retriever.backends.onnx.OnnxPredictor`; int8 unless ``precision='fp32'``.

    ``num_threads`` sets torch's (process-wide) and ORT's intra-op thread count.
    """
    opts = options if options is not None else FastPathOptions()
    if isinstance(config_or_model, EmbeddingPredictor):
        model = config_or_model
    elif isinstance(config_or_model, PredictorConfig):
        if config_or_model.checkpoint_path:
            model = load_checkpoint(config_or_model.checkpoint_path).model
        else:
            model = EmbeddingPredictor(config_or_model)
    else:
        raise TypeError(f"expected a PredictorConfig or an EmbeddingPredictor; got {type(config_or_model).__name__}")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    if backend == "auto":
        cpu_int8 = dev.type == "cpu" and opts.precision in ("auto", "int8") and _onnxruntime_available()
        backend = "onnx" if cpu_int8 else "torch"
    if backend == "onnx":
        if dev.type != "cpu":
            raise PredictorError("backend='onnx' runs on CPU (onnxruntime CPUExecutionProvider)")
        out_dir = Path(onnx_dir) if onnx_dir is not None else Path(tempfile.mkdtemp(prefix="prime_onnx_"))
        try:
            path = export_onnx(model, out_dir / "predictor.onnx")  # exports a copy
            onnx_predictor = OnnxPredictor(
                path, model.config, int8=opts.precision != "fp32", optimize=True, intra_op_threads=num_threads
            )
        except BaseException:
            if onnx_dir is None:  # nothing in the private folder is worth keeping
                shutil.rmtree(out_dir, ignore_errors=True)
            raise
        if onnx_dir is None:  # the session holds the graph in memory: the temporary files can go
            weakref.finalize(onnx_predictor, shutil.rmtree, out_dir, True)
        if opts.warmup:
            onnx_predictor.warmup()
        return onnx_predictor
    return OptimizedPredictor(model.eval(), device=dev, options=opts)


def make_backend(model: EmbeddingPredictor, backend: str = "eager", *, onnx_path: str | os.PathLike[str] | None = None
                 ) -> PredictorBackend:
    """Wrap ``model`` in a :class:`PredictorBackend`.

    ``"eager"``: plain torch; ``"fast"``: :func:`create_optimized_predictor`'s
    choice for the device; ``"compiled"``: its torch path; ``"onnx"``: the ONNX graph at ``onnx_path``
    (exported to a temporary folder when ``None``).
    """
    name = backend.lower()
    if name == "eager":
        return EagerPredictor(model)
    if name in ("fast", "auto", "compiled", "torch", "optimized"):
        # "fast": the fastest correct path for the device (int8 ONNX on CPU); "compiled": torch only
        kind: Literal["auto", "torch"] = "auto" if name in ("fast", "auto") else "torch"
        built: PredictorBackend = create_optimized_predictor(model, backend=kind, options=FastPathOptions(warmup=False))
        return built
    if name == "onnx":
        if onnx_path is not None:
            return OnnxPredictor(Path(onnx_path), model.config)
        # fp32 export into a private temporary folder, removed with the backend
        exported: PredictorBackend = create_optimized_predictor(
            model, device="cpu", backend="onnx", options=FastPathOptions(precision="fp32", warmup=False)
        )
        return exported
    raise ValueError(f"unknown predictor backend {backend!r}; expected 'eager', 'fast', 'compiled' or 'onnx'")
