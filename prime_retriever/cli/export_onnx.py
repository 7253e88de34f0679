"""``prime-retriever export-onnx CKPT OUT [--int8]``: export a checkpoint to ONNX, checked against torch."""

from __future__ import annotations

import argparse
import math
import os
import shutil
import tempfile
from pathlib import Path

from prime_retriever.backends.onnx import (
    DEFAULT_OPSET,
    OnnxPredictor,
    check_parity,
    export_onnx,
    int8_path,
    quantize_onnx_int8,
)
from prime_retriever.errors import PrimeError
from prime_retriever.model.checkpoint import load_checkpoint


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="checkpoint directory")
    parser.add_argument("out", help="output .onnx file")
    parser.add_argument("--int8", action="store_true", help="also write an int8 dynamically quantised <out>.int8.onnx")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument("--no-check", action="store_true", help="skip the onnxruntime-vs-torch parity check")


def run_cli(args: argparse.Namespace) -> int:
    target = Path(args.out)
    if target.is_dir():
        raise PrimeError(f"{target} is a directory: give the .onnx file to write")
    model = load_checkpoint(args.checkpoint).model
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # exported beside the target and renamed into place only once it passes: a failed export leaves nothing
        work = Path(tempfile.mkdtemp(prefix=".onnx-export-", dir=target.parent))
    except OSError as exc:  # the folder is a file, or cannot be created or written
        raise PrimeError(f"cannot write {target}: {exc}") from exc
    try:
        try:
            out = export_onnx(model, work / target.name, opset=args.opset)
        except (RuntimeError, ValueError) as exc:  # e.g. an opset the exporter cannot target
            raise PrimeError(f"ONNX export at opset {args.opset} failed: {' '.join(str(exc).split())[:300]}") from exc
        if not args.no_check:
            diff = check_parity(model, OnnxPredictor(out, model.config, optimize=False))
            print(f"fp32 parity: max |onnx - torch| = {diff:.2e}")
            if not math.isfinite(diff) or diff >= 1e-4:  # NaN compares False: a NaN model must fail too
                raise PrimeError(f"fp32 parity check failed: max |onnx - torch| = {diff:.2e} (must be < 1e-4)")
        for f in work.iterdir():  # the graph, and its <name>.data weights when stored beside it
            os.replace(f, target.parent / f.name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = target
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, opset {args.opset})")
    if args.int8:
        q = quantize_onnx_int8(out, int8_path(out))
        print(f"wrote {q} ({q.stat().st_size / 1e6:.1f} MB, int8 dynamic, per-channel 7-bit weights)")
    return 0
