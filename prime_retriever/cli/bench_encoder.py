"""``prime-retriever bench-encoder``: every text-encoder path side by side (speed, agreement, retrieval)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from prime_retriever.cli.arg_types import positive_int, report_path


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``prime-retriever bench-encoder``."""
    parser.add_argument("--data-dir", default=None, help="data folder (default: $PRIME_DATA_DIR or ../shared/data)")
    parser.add_argument("--docs", type=positive_int, default=2000, help="HotpotQA paragraphs encoded by every path")
    parser.add_argument("--questions", type=positive_int, default=500, help="first_hop questions")
    parser.add_argument("--query-latency", type=positive_int, default=200, help="batch-1 query encodes timed")
    parser.add_argument("--checkpoint", default=None,
                        help="checkpoint for the retrieval columns (default: runs/demo/checkpoint if present)")
    parser.add_argument("--links", default=None, help="its link graph (default: runs/demo/links.json if present, "
                                                      "else built from the bench corpus)")
    parser.add_argument("--paths", default="eager,onnx-fp32,onnx-int8,bge-small-en-v1.5,e5-small-v2",
                        help="comma-separated encoder paths")
    parser.add_argument("--quick", action="store_true", help="600 paragraphs, 150 questions (a few minutes)")
    parser.add_argument("--files", default="",
                        help="comma-separated HotpotQA files under hotpotqa/ (default: every file, pooled), "
                             "e.g. hipporag_train100.json")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=report_path, default=None, help="also write the figures to this JSON file")


def run_cli(args: argparse.Namespace) -> int:
    """Run the benchmark; print the markdown table (and write --out)."""
    from training.bench.encoder import EncoderBenchOptions, markdown_table, run_encoder_bench

    env = os.environ.get("PRIME_DATA_DIR")
    data_dir = Path(args.data_dir or env or Path(__file__).resolve().parents[3] / "shared" / "data")
    ckpt = Path(args.checkpoint) if args.checkpoint else Path("runs/demo/checkpoint")
    links = Path(args.links) if args.links else Path("runs/demo/links.json")
    opts = EncoderBenchOptions(
        data_dir=data_dir,
        docs=600 if args.quick else args.docs,
        questions=150 if args.quick else args.questions,
        query_latency=50 if args.quick else args.query_latency,
        checkpoint=ckpt if (ckpt / "meta.json").is_file() else None,
        links=links if links.is_file() else None,
        paths=tuple(p.strip() for p in args.paths.split(",") if p.strip()),
        seed=args.seed,
        files=tuple(f.strip() for f in args.files.split(",") if f.strip()),
    )
    results = run_encoder_bench(opts)
    print()
    print(f"bench-encoder: {results['docs']} HotpotQA paragraphs, {results['questions']} first_hop questions; "
          f"checkpoint {opts.checkpoint or 'none'}; links {opts.links or 'built from the corpus'}")
    print(markdown_table(results))
    print(f"\nencoder=\"fast\" chooses: {results['chosen']}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0
