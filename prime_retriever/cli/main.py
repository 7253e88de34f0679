"""The ``prime-retriever`` command line.

Each subcommand has one module, which defines

    def add_cli_arguments(parser: argparse.ArgumentParser) -> None: ...
    def run_cli(args: argparse.Namespace) -> int: ...

and is imported only when its subcommand runs, so ``prime-retriever info`` never pays for
importing the training stack. The research subcommands (``train``, ``bench``, ``convert``,
``bench-latency``, ``bench-retriever``) run code of the ``training`` package: the one place where
the runtime reaches into ``training``, through this table, lazily.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from prime_retriever.errors import PrimeError

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("prime_retriever.cli.info", "Print a checkpoint's config, size, sha256 and metrics."),
    "predict": ("prime_retriever.cli.predict", "Read a PredictorInput JSON on stdin, write a PredictorOutput JSON."),
    "index": ("prime_retriever.cli.index", "Encode a corpus and index it into Qdrant (local, edge or server)."),
    "links": ("prime_retriever.cli.links", "Build a corpus's title-mention link graph (for link expansion)."),
    "export-onnx": ("prime_retriever.cli.export_onnx", "Export a checkpoint to ONNX."),
    "bench-latency": ("training.bench.latency", "Predictor latency of every inference path."),
    "bench-retriever": ("training.bench.serving", "Search latency, micro-batching and cache figures."),
    "bench-encoder": ("prime_retriever.cli.bench_encoder", "Every text-encoder path: speed, cosine, retrieval."),
    "convert": ("training.convert", "Write a supported dataset in the generic JSONL format."),
    "train": ("prime_retriever.cli.train", "Train a predictor and save a checkpoint."),
    "bench": ("training.bench", "End-to-end retrieval benchmark against the baselines."),
}


def build_parser(load: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """Build the parser; only the modules of the subcommands in ``load`` are imported."""
    parser = argparse.ArgumentParser(prog="prime-retriever", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if load is not None and name in load:
            importlib.import_module(module).add_cli_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(load=[command] if command in COMMANDS else [])
    args = parser.parse_args(argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run_cli(args))
    except (PrimeError, ValidationError) as exc:
        # a typed, expected failure (bad input, bad checkpoint, unreachable store): one clear line
        print(f"prime-retriever {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 1


def _one_line(exc: Exception) -> str:
    """The error as one line: pydantic's multi-line report becomes its messages, joined."""
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'input'}: {e['msg']}" for e in exc.errors())
    return " ".join(str(exc).split())


if __name__ == "__main__":
    sys.exit(main())
