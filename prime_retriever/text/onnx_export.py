"""Export a sentence-transformers (BERT-style) model folder to ONNX once, and cache it on disk.

:func:`exported_encoder` returns the folder holding ``model.onnx`` (fp32) and ``model.int8.onnx``
for a model folder, writing them on first use under
``<cache>/onnx-encoders/<model>-<weights sha256[:12]>-v<format>/``: keyed by the weights'
fingerprint (a fine-tuned copy gets its own export), like the predictor's ONNX file.

Why by hand: sentence-transformers' ``backend="onnx"`` and its quantisation export go through
optimum, and optimum-onnx needs ``transformers<4.58`` while this project runs transformers 5; the
export here is ``torch.onnx.export`` of the transformer (pooling stays in numpy) and the int8 copy is
onnxruntime's own ``quantize_dynamic``.

The int8 graph has no ``attention_mask`` input: it runs one text per forward (see
:class:`~prime_retriever.text.onnx_encoder.OnnxTextEncoder`), so there is never padding to mask, and the
mask's ``Where``/``IsNaN`` nodes were an eighth of its time. Its embeddings are bit-identical to the
masked graph's (docs/performance.md).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path

from prime_retriever.errors import EncoderError
from prime_retriever.text.embedding_cache import default_cache_dir
from prime_retriever.text.onnx_encoder import INT8_FORMAT_KEY

__all__ = [
    "EXPORT_FORMAT", "INT8_FORMAT", "export_encoder_onnx", "exported_encoder", "file_sha256", "quantize_encoder_int8",
]

#: bumped when the exported graphs change, so that an older cached export is not reused
#: (2: the int8 graph without ``attention_mask``)
EXPORT_FORMAT = 2
#: the int8 recipe stamped on the graphs (see :func:`quantize_encoder_int8`)
INT8_FORMAT = "7bit-ffn-out-fp32"


def export_encoder_onnx(model_dir: Path, out: Path, *, opset: int = 17, mask: bool = True) -> Path:
    """Write the transformer of ``model_dir`` (fp32, eval) as ONNX: ``input_ids``, ``attention_mask``,
    ``token_type_ids`` (B × T int64, both axes dynamic) -> ``last_hidden_state`` (B × T × D).

    ``mask=False`` leaves ``attention_mask`` out (every token attends to every token): only for graphs
    fed one unpadded text at a time."""
    import torch
    from transformers import AutoModel

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        model = AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()
    except Exception as exc:
        raise EncoderError(f"cannot load encoder model {model_dir} for export: {exc}") from exc

    class _Wrapper(torch.nn.Module):
        # keyword arguments: transformers 5 moved the positional parameters of forward()
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, ids: torch.Tensor, types: torch.Tensor,
                    attention: torch.Tensor | None = None) -> torch.Tensor:
            out = self.model(input_ids=ids, attention_mask=attention, token_type_ids=types)
            hidden: torch.Tensor = out.last_hidden_state
            return hidden  # B × T × D

    ids = torch.tensor([[101, 7592, 2088, 102, 0], [101, 1037, 2936, 6251, 102]])  # B × T, one padded row
    if mask:
        args: tuple[torch.Tensor, ...] = (ids, torch.zeros_like(ids), (ids != 0).long())
        names = ["input_ids", "token_type_ids", "attention_mask"]
    else:
        args, names = (ids, torch.zeros_like(ids)), ["input_ids", "token_type_ids"]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about shape-dependent Python values
        torch.onnx.export(
            _Wrapper().eval(), args, str(out), dynamo=False,
            input_names=names, output_names=["last_hidden_state"], opset_version=opset,
            dynamic_axes={k: {0: "batch", 1: "tokens"} for k in (*names, "last_hidden_state")},
            do_constant_folding=True,
        )
    return out


def quantize_encoder_int8(src: Path, dst: Path) -> Path:
    """Write an int8 dynamically quantised copy of the encoder graph ``src`` to ``dst``.

    Weights are per-channel with 7 bits (``reduce_range``), so that the u8 × s8 pair sums of x86
    CPUs without VNNI cannot saturate (the predictor's int8 graph does the same,
    :func:`~prime_retriever.backends.onnx.quantize_onnx_int8`). The feed-forward output projections
    (``.../output/dense``, after GELU, whose activations have the outliers that uint8 per-tensor
    activations round worst) stay fp32: quantising them too cost most of the cosine to fp32 on
    HotpotQA paragraphs (docs/performance.md). The graph is stamped with ``INT8_FORMAT_KEY``.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(src), load_external_data=False)
    ffn_out = [n.name for n in graph.graph.node
               if n.op_type == "MatMul" and "/output/dense/" in n.name and "/attention/" not in n.name]
    quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
                     op_types_to_quantize=["MatMul"], nodes_to_exclude=ffn_out)
    q = onnx.load(str(dst))
    onnx.helper.set_model_props(q, {INT8_FORMAT_KEY: INT8_FORMAT})
    onnx.save_model(q, str(dst))
    return dst


def _export_dirname(model_name: str, fingerprint: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", model_name).strip("._-")[:80] or "encoder"
    return f"{safe}-{fingerprint}-v{EXPORT_FORMAT}"


def exported_encoder(model_dir: Path, model_name: str, fingerprint: str, cache_root: Path | None = None) -> Path:
    """The cache folder with ``model.onnx`` and ``model.int8.onnx`` for ``model_dir``; exported on first use.

    The export is written in a temporary folder beside the target and renamed into place whole, so
    an interrupted export never leaves a graph that a later call would take for a finished one, and
    two processes exporting at once both end with a complete folder.

    Raises:
        EncoderError: ``fingerprint`` is empty (a folder without weights we know cannot be keyed), or
            the export failed.
    """
    if not fingerprint:
        raise EncoderError(f"{model_dir} has no weight file to fingerprint; cannot cache its ONNX export")
    root = (cache_root if cache_root is not None else default_cache_dir()) / "onnx-encoders"
    final = root / _export_dirname(model_name, fingerprint)
    if (final / "model.int8.onnx").is_file() and (final / "model.onnx").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".export-", dir=root))
    try:
        export_encoder_onnx(model_dir, work / "model.onnx")
        export_encoder_onnx(model_dir, work / "unmasked.onnx", mask=False)
        quantize_encoder_int8(work / "unmasked.onnx", work / "model.int8.onnx")
        (work / "unmasked.onnx").unlink()
        (work / "source.txt").write_text(f"{model_dir}\n{model_name}\n{fingerprint}\n", encoding="utf-8")
        try:
            os.replace(work, final)
        except OSError:  # another process finished first: its folder is as good as ours
            if not (final / "model.int8.onnx").is_file():
                raise
    except EncoderError:
        raise
    except Exception as exc:
        raise EncoderError(f"cannot export {model_dir} to ONNX: {exc}") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
