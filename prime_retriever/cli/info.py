"""``prime-retriever info CHECKPOINT``: what a checkpoint holds, after the checks that loading it runs."""

from __future__ import annotations

import argparse
import json

from prime_retriever.model.checkpoint import checkpoint_size_bytes, verify_checkpoint


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="checkpoint directory")
    parser.add_argument("--json", action="store_true", help="print meta.json plus size as JSON")


def run_cli(args: argparse.Namespace) -> int:
    meta = verify_checkpoint(args.checkpoint)
    size = checkpoint_size_bytes(args.checkpoint)
    if args.json:
        print(json.dumps({**meta.model_dump(mode="json"), "size_bytes": size}, indent=2))
        return 0
    enc = f"{meta.encoder.name} ({meta.encoder.dim}-d)" if meta.encoder else "unknown"
    print(f"checkpoint:   {args.checkpoint}")
    print(f"format:       {meta.format} v{meta.format_version} (prime_retriever {meta.package_version})")
    print(f"created:      {meta.created_at}")
    print(f"size:         {size / 1e6:.1f} MB ({size} bytes), weights stored as {meta.dtype}")
    print(f"sha256:       {meta.weights_sha256} (verified)")
    print(f"parameters:   {meta.num_parameters:,}")
    print(f"encoder:      {enc}")
    print(f"needs reindex: {meta.needs_reindex}")
    sc = meta.score_confidence
    print(f"confidence:   {'the predictor head (no search-score calibration)' if sc is None else sc.describe()}")
    print("config:")
    for k, v in meta.config.model_dump().items():
        print(f"  {k}: {v}")
    if meta.provenance.datasets:
        print("datasets:")
        for d in meta.provenance.datasets:
            print(f"  {d.name} [{d.split}]: {d.n_examples} examples")
    if meta.provenance.metrics:
        print("metrics:")
        for k, v in meta.provenance.metrics.items():
            print(f"  {k}: {v:.4f}" if v is not None else f"  {k}: not finite")
    return 0
