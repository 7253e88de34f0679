"""ONNX export of the predictor and an onnxruntime backend.

* :func:`export_onnx` writes the model as an ONNX graph with inputs ``context_embeddings``
  (B × N × D float32), ``query_embedding`` (B × D float32) and ``context_mask`` (B × N bool, True = real
  turn), outputs ``embedding`` (B × O, unit norm) and ``confidence`` (B, in [0, 1]); batch and turn axes
  are dynamic. It uses the TorchScript exporter (``dynamo=False``), which lowers the boolean SDPA mask
  to ``Where(mask, 0, -inf)``; weights above :data:`EXTERNAL_DATA_THRESHOLD` go to an external data file.
* :func:`quantize_onnx_int8` writes an int8 dynamically quantised copy (per-channel 7-bit weights, so
  that x86 CPUs without VNNI cannot saturate; see its docstring).
* :class:`OnnxPredictor` runs a graph through onnxruntime behind the
  :class:`~prime_retriever.backends.inference.PredictorBackend` protocol, optionally after ORT's full graph
  optimisation (saved next to the model) and optionally int8.

CLI: ``prime-retriever export-onnx CKPT OUT [--int8]``.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from prime_retriever.backends.inference import ConfigDims
from prime_retriever.backends.validation import validate_arrays
from prime_retriever.errors import PredictorError
from prime_retriever.model.config import PredictorConfig
from prime_retriever.model.predictor import EmbeddingPredictor

__all__ = [
    "DEFAULT_OPSET",
    "EXTERNAL_DATA_THRESHOLD",
    "INT8_FORMAT_KEY",
    "OnnxPredictor",
    "check_parity",
    "export_onnx",
    "int8_path",
    "quantize_onnx_int8",
]

DEFAULT_OPSET = 17  # LayerNormalization is native from 17; onnxruntime >= 1.14 runs it
# protobuf caps a message at 2 GiB: keep a margin for the graph itself
EXTERNAL_DATA_THRESHOLD = 1_800_000_000
INPUT_NAMES = ("context_embeddings", "query_embedding", "context_mask")
OUTPUT_NAMES = ("embedding", "confidence")
# metadata key stamped on the int8 graphs this module writes; a cached <model>.int8.onnx without it
# (8-bit weights, written before 7-bit weights were the default) is quantised again on load
INT8_FORMAT_KEY = "prime_retriever.int8_weights"
INT8_FORMAT = "7bit"


class _ExportWrapper(nn.Module):
    """``(context B × N × D, query B × D, mask B × N bool) -> (embedding B × O, confidence B)``."""

    def __init__(self, model: EmbeddingPredictor) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, context: torch.Tensor, query: torch.Tensor, context_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model.predict(context, query, context_mask)
        return out.embedding, torch.sigmoid(out.confidence_logit)  # B × O, B


def _weights_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def export_onnx(
    model: EmbeddingPredictor,
    path: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    batch_size: int = 2,
    num_turns: int | None = None,
) -> Path:
    """Export a copy of ``model`` (fp32, CPU, eval) to ``path``; return the path. ``model`` is left as it was.

    The sample input has ``batch_size`` rows and ``num_turns`` turns (default: max_context_length),
    but both axes are dynamic in the graph. The mask input is always present (pass all True for
    "no padding"). Above :data:`EXTERNAL_DATA_THRESHOLD` bytes of weights the tensors are stored in
    ``<path>.data`` beside the graph.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    N = num_turns or cfg.max_context_length
    src = copy.deepcopy(model).to("cpu", torch.float32).eval()  # not in place: the caller's device/dtype/mode stay
    wrapper = _ExportWrapper(src).eval()
    g = torch.Generator().manual_seed(0)
    sample = (
        torch.randn(batch_size, N, cfg.input_dim, generator=g),  # B × N × D
        torch.randn(batch_size, cfg.input_dim, generator=g),  # B × D
        torch.ones(batch_size, N, dtype=torch.bool),  # B × N
    )
    sample[2][0, -1] = False  # a padded turn, so the mask path is traced with real data
    large = _weights_bytes(src) > EXTERNAL_DATA_THRESHOLD
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about shape-dependent Python values
        torch.onnx.export(
            wrapper,
            sample,
            str(out),
            dynamo=False,
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            opset_version=opset,
            dynamic_axes={
                "context_embeddings": {0: "batch", 1: "turns"},
                "query_embedding": {0: "batch"},
                "context_mask": {0: "batch", 1: "turns"},
                "embedding": {0: "batch"},
                "confidence": {0: "batch"},
            },
            do_constant_folding=True,
        )
    if large:
        _to_external_data(out)
    return out


def _to_external_data(path: Path) -> None:
    """Move every initializer of ``path`` into ``<name>.data`` (graphs over protobuf's 2 GiB limit)."""
    import onnx

    m = onnx.load(str(path))
    data = path.name + ".data"
    (path.parent / data).unlink(missing_ok=True)
    onnx.save_model(m, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=data)


def int8_path(graph: Path) -> Path:
    """Where the int8 copy of ``graph`` is written and looked for: ``<model>.int8.onnx``."""
    return graph.with_name(graph.stem + ".int8.onnx")


def _opt_path(graph: Path) -> Path:
    """Where onnxruntime's optimised copy of ``graph`` is saved and reused: ``<model>.opt.onnx``."""
    return graph.with_name(graph.stem + ".opt.onnx")


def _is_large(graph: Path) -> bool:
    """Whether ``graph`` is, or must be written as, a graph with its weights in ``<name>.data``."""
    return graph.stat().st_size > EXTERNAL_DATA_THRESHOLD or Path(str(graph) + ".data").exists()


def quantize_onnx_int8(
    src: str | Path, dst: str | Path, *, per_channel: bool = True, reduce_range: bool = True
) -> Path:
    """Write an int8 dynamically quantised copy of the graph ``src`` (MatMul/Gemm weights) to ``dst``.

    Activations are quantised to uint8 at run time and weights to int8, so onnxruntime runs
    u8 × s8 GEMMs. On x86 CPUs with VNNI (``vpdpbusd``) these accumulate in int32. Without VNNI (AVX2,
    or AVX-512 without VNNI) MLAS multiplies with ``vpmaddubsw``, which adds each adjacent pair of
    u8 × s8 products into an int16 and saturates: with 8-bit weights a pair can reach 2 · 255 · 127 =
    64,770 > 32,767, and the outputs drift (cosine to fp32 0.80-0.95 on the tests' model, measured on
    such a CPU). ``reduce_range=True`` (the default) quantises the weights to 7 bits, [-64, 64], so a pair
    is at most 255 · 128 = 32,640 and cannot saturate on any CPU; on a VNNI CPU it costs a little
    precision (cosine 0.9999 -> 0.9997 on the tests' model). The graph is stamped with
    :data:`INT8_FORMAT_KEY` so that an older cached copy is rebuilt.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = Path(dst)
    out.parent.mkdir(parents=True, exist_ok=True)
    large = _is_large(Path(src))
    # written beside the target and renamed into place whole: an interrupted run leaves no truncated
    # graph that a later load would take for a finished one
    work = Path(tempfile.mkdtemp(prefix=".int8-", dir=out.parent))
    try:
        quantize_dynamic(
            Path(src),
            work / out.name,
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            reduce_range=reduce_range,
            op_types_to_quantize=["MatMul", "Gemm"],
            use_external_data_format=large,
        )
        if reduce_range:  # the graph alone is rewritten; external weights stay where they are
            graph = onnx.load(str(work / out.name), load_external_data=False)
            onnx.helper.set_model_props(graph, {INT8_FORMAT_KEY: INT8_FORMAT})
            onnx.save_model(graph, str(work / out.name))
        for f in work.iterdir():  # the graph, and its .data when stored beside it
            os.replace(f, out.parent / f.name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


class OnnxPredictor(ConfigDims):
    """An ONNX graph run by onnxruntime (CPU), behind the PredictorBackend protocol.

    ``optimize=True`` applies ORT_ENABLE_ALL and saves the optimised graph as
    ``<model>.opt.onnx`` (reused by later sessions). ``int8=True`` quantises the graph first
    (``<model>.int8.onnx``) unless ``path`` is already a quantised graph.
    """

    def __init__(
        self,
        path: str | Path,
        config: PredictorConfig,
        *,
        int8: bool = False,
        optimize: bool = True,
        intra_op_threads: int | None = None,
        providers: list[str] | None = None,
    ) -> None:
        self.config = config
        given = Path(path)
        if not given.is_file():
            raise PredictorError(f"ONNX model not found: {given}")
        self.int8 = int8
        self.name = "onnx-int8" if int8 else "onnx-fp32"
        try:
            self.session, self.path = self._open(given, int8, optimize, intra_op_threads, providers)
        except PredictorError:
            raise
        except Exception as first:  # a cached int8/optimised graph may be stale or cut short: rebuild once
            caches = [int8_path(given), _opt_path(given), _opt_path(int8_path(given))]
            if not any(c.exists() for c in caches):
                raise PredictorError(f"cannot load the ONNX graph {given}: {first}") from first
            for c in caches:
                c.unlink(missing_ok=True)
                Path(str(c) + ".data").unlink(missing_ok=True)
            try:
                self.session, self.path = self._open(given, int8, optimize, intra_op_threads, providers)
            except Exception as exc:
                raise PredictorError(f"cannot load the ONNX graph {given}: {exc}") from exc
        self._check_fits_config()

    def _check_fits_config(self) -> None:
        """Run the graph once at full context length: a graph exported for another config (turns,
        dims) is refused here, not on the first real request."""
        N, D = self.config.max_context_length, self.config.input_dim
        try:
            emb, _ = self.session.run(list(OUTPUT_NAMES), {
                "context_embeddings": np.ones((1, N, D), np.float32), "query_embedding": np.ones((1, D), np.float32),
                "context_mask": np.ones((1, N), bool)})
        except Exception as exc:
            raise PredictorError(
                f"the ONNX graph {self.path} does not fit its config (max_context_length={N}, input_dim={D}): "
                f"{' '.join(str(exc).split())[:300]}"
            ) from exc
        if np.shape(emb) != (1, self.config.output_dim):
            raise PredictorError(
                f"the ONNX graph {self.path} outputs shape {np.shape(emb)}, "
                f"its config says (1, {self.config.output_dim})"
            )

    def _open(self, src: Path, int8: bool, optimize: bool, intra_op_threads: int | None,
              providers: list[str] | None) -> tuple[Any, Path]:
        import onnxruntime as ort

        cached_int8 = int8 and not src.name.endswith(".int8.onnx")
        if cached_int8:
            qpath = int8_path(src)
            if not qpath.is_file() or qpath.stat().st_mtime < src.stat().st_mtime:
                quantize_onnx_int8(src, qpath)
            src = qpath
        so = ort.SessionOptions()
        so.intra_op_num_threads = intra_op_threads or (torch.get_num_threads() or os.cpu_count() or 1)
        so.inter_op_num_threads = 1
        so.log_severity_level = 3  # errors only (not the "hardware-specific optimised model" notice)
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        load = src
        if optimize:
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opt = _opt_path(src)
            if opt.is_file() and opt.stat().st_mtime >= src.stat().st_mtime:
                load = opt  # already optimised on an earlier load
            else:
                so.optimized_model_filepath = str(opt)
                if _is_large(src):
                    so.add_session_config_entry(
                        "session.optimized_model_external_initializers_file_name", opt.name + ".data"
                    )
        else:
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = ort.InferenceSession(str(load), so, providers=providers or ["CPUExecutionProvider"])
        if cached_int8 and session.get_modelmeta().custom_metadata_map.get(INT8_FORMAT_KEY) != INT8_FORMAT:
            # 8-bit weights cached by an earlier version: __init__ drops the caches and quantises again
            raise RuntimeError(f"{load} has no {INT8_FORMAT_KEY}={INT8_FORMAT} stamp (8-bit weights)")
        return session, src


    def predict(
        self, context: np.ndarray, query: np.ndarray, context_mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(embedding B × O float32, confidence B float32)``; raises PredictorError on bad input."""
        c, q, m = validate_arrays(self.config, context, query, context_mask)
        feeds: dict[str, Any] = {
            "context_embeddings": np.ascontiguousarray(c),  # B × N × D
            "query_embedding": np.ascontiguousarray(q),  # B × D
            "context_mask": np.ascontiguousarray(m),  # B × N bool
        }
        emb, conf = self.session.run(list(OUTPUT_NAMES), feeds)
        return np.asarray(emb, np.float32), np.asarray(conf, np.float32)

    def warmup(self) -> None:
        rng = np.random.default_rng(0)
        N, D = self.config.max_context_length, self.config.input_dim
        for b in (1, 2):
            self.predict(rng.standard_normal((b, N, D)).astype(np.float32), rng.standard_normal((b, D), np.float32))


def check_parity(model: EmbeddingPredictor, predictor: OnnxPredictor, *, batch: int = 4, seed: int = 0) -> float:
    """Max abs difference of the embeddings of ``predictor`` and the torch model on random padded inputs."""
    cfg = model.config
    rng = np.random.default_rng(seed)
    N = cfg.max_context_length
    c = rng.standard_normal((batch, N, cfg.input_dim)).astype(np.float32)  # B × N × D
    q = rng.standard_normal((batch, cfg.input_dim)).astype(np.float32)  # B × D
    m = np.ones((batch, N), bool)
    m[0, N // 2 :] = False
    with torch.inference_mode():
        ref = model.predict(torch.from_numpy(c), torch.from_numpy(q), torch.from_numpy(m)).embedding.numpy()
    emb, _ = predictor.predict(c, q, m)
    return float(np.abs(emb - ref).max())


def _tmp_dir() -> Path:
    """A scratch directory for exports made on the fly (benchmarks)."""
    return Path(tempfile.mkdtemp(prefix="prime_onnx_"))
