"""``prime-retriever train``: load, split, encode, train, print the figures (runs :mod:`training.trainer`)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prime_retriever.cli.arg_types import output_dir, parse_bool
from prime_retriever.errors import PrimeError
from prime_retriever.model.config import PredictorConfig
from prime_retriever.retrieval.link_graph import LinkExpansion, LinkGraph
from prime_retriever.text.documents import Document
from prime_retriever.text.embedding_cache import CachedEncoder, EmbeddingCache
from prime_retriever.text.encoders import HFTextEncoder
from training.data import assert_disjoint, load_dataset, load_hotpotqa_pool, merge_datasets, split_examples
from training.data.registry import detect
from training.data.splits import dedupe_examples
from training.trainer import TrainOptions, time_budget_warning, train_predictor
from training.training_config import TrainingConfig

_PREDICTOR_FLAGS = ("hidden_dim", "num_layers", "num_heads", "dropout", "max_context_length", "residual",
                    "input_mixing", "attention_layout", "block_type", "link_candidates", "link_seeds")


def _add_model_flags(parser: argparse.ArgumentParser, model: type[Any], names: Sequence[str] | None,
                     title: str) -> None:
    group = parser.add_argument_group(title)
    for name, info in model.model_fields.items():
        if names is not None and name not in names:
            continue
        flag = "--" + name.replace("_", "-")
        ann = info.annotation
        kind: Any = parse_bool if ann is bool else int if ann is int else float if ann is float else str
        extra: dict[str, Any] = {}
        if name == "attention_layout":
            extra["choices"] = ["bidirectional", "prefix"]
        if name == "block_type":
            extra["choices"] = ["standard", "llama"]
        default = info.default
        if name == "y_encoder_lr_multiplier":
            default = 0.0
        group.add_argument(flag, type=kind, default=None, metavar=name.upper() if kind is not parse_bool else "BOOL",
                           help=f"{info.description or name} (default: {default})", **extra)


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``prime-retriever train``."""
    parser.add_argument("--data", nargs="+", required=True, metavar="FILE",
                        help="dataset files (any format training.data detects; HotpotQA files are pooled)")
    parser.add_argument("--framing", default="first_hop", choices=["first_hop", "multi_hop", "given"])
    parser.add_argument("--out", required=True, metavar="CKPT", type=output_dir, help="checkpoint directory to write")
    parser.add_argument("--config", metavar="FILE", help="JSON/YAML with 'predictor' and/or 'training' sections")
    parser.add_argument("--corpus", metavar="FILE", help="corpus file for generic JSONL data")
    parser.add_argument("--eval-fraction", type=float, default=0.1, help="held-out share of questions (default 0.1)")
    parser.add_argument("--max-steps", type=int, help="stop after this many optimiser steps")
    parser.add_argument("--time-budget", type=float, metavar="SECONDS", help="stop after this many seconds")
    parser.add_argument("--limit", type=int,
                        help="use only the first N examples (before the split) and only the documents they name")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", help="Lightning precision (default: from --mixed-precision)")
    parser.add_argument("--hard-negatives", type=int, default=0, metavar="K",
                        help="explicit hard negatives per row from the examples' negative_ids")
    parser.add_argument("--patience", type=int, default=5, help="early-stopping patience (validations)")
    parser.add_argument("--links", metavar="FILE",
                        help="title-mention link graph (prime-retriever links) for --link-candidates > 0 "
                             "(default: built from the corpus and written to OUT.links.json)")
    parser.add_argument("--mined-negatives", type=int, default=16, metavar="K",
                        help="with link expansion and --hard-negatives > 0: the query's K top-ranked non-gold "
                             "documents join the hard-negative pool")
    parser.add_argument("--query-only", type=float, default=0.0, metavar="P",
                        help="augmentation: each training row, with probability P, sees the query as its only "
                             "context turn (no history, no links)")
    parser.add_argument("--encoder", help="X/Y-Encoder model folder (default: the bundled all-MiniLM-L6-v2)")
    parser.add_argument("--cache-dir", help="embedding cache root (default: $PRIME_CACHE_DIR or ~/.cache)")
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--strategy", default="auto", help="Lightning strategy, e.g. ddp, ddp_spawn")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--wandb", action="store_true", help="log to Weights & Biases (if installed)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    _add_model_flags(parser, PredictorConfig, _PREDICTOR_FLAGS, "predictor")
    _add_model_flags(parser, TrainingConfig, None, "training")


def _read_config(path: str | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        text = Path(path).read_text(encoding="utf-8")
        if path.endswith((".yaml", ".yml")):
            import yaml

            try:
                raw = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise PrimeError(f"{path}: invalid YAML: {exc}") from exc
        else:
            raw = json.loads(text)
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: invalid JSON or not UTF-8
        raise PrimeError(f"{path}: cannot read the config: {exc}") from exc
    if not isinstance(raw, dict):
        raise PrimeError(f"{path}: expected a mapping")
    for section in ("predictor", "training"):
        if not isinstance(raw.get(section, {}), dict):
            raise PrimeError(f"{path}: {section!r} must be a mapping of settings")
    return raw


def _split_config(raw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    pred = dict(raw.get("predictor", {}))
    train = dict(raw.get("training", {}))
    for k, v in raw.items():
        if k in ("predictor", "training"):
            continue
        if k in PredictorConfig.model_fields:
            pred[k] = v
        elif k in TrainingConfig.model_fields:
            train[k] = v
        else:
            raise PrimeError(f"unknown config key {k!r}")
    return pred, train


def _load_data(paths: Sequence[str], framing: str, corpus_path: str | None) -> Any:
    hotpot = [p for p in paths if detect(p) == "hotpotqa" and not Path(p).name.startswith("ecm_")]
    others = [p for p in paths if p not in hotpot]
    datasets = []
    if hotpot:
        datasets.append(load_hotpotqa_pool(hotpot, framing))
    for p in others:
        datasets.append(load_dataset(p, framing, corpus_path=corpus_path))
    ds = datasets[0] if len(datasets) == 1 else merge_datasets("+".join(d.name for d in datasets), datasets)
    if len(datasets) > 1:
        ds.examples = dedupe_examples(ds.examples)
    return ds


def _expansion(config: PredictorConfig, corpus: Mapping[str, Document], links: str | None,
               out: str) -> LinkExpansion | None:
    """The link expansion ``config`` asks for: the graph from ``links``, or built from the corpus and saved."""
    if config.link_candidates == 0:
        return None
    if links is not None:
        graph = LinkGraph.load(links)
    else:
        graph = LinkGraph.build(corpus.values(), show_progress=True)
        path = graph.save(Path(str(out).rstrip("/") + ".links.json"))
        print(f"link graph: {len(graph)} documents link to others, {graph.num_links} links -> {path} "
              "(serve with PredictiveRetriever.from_config(..., links=that file))", flush=True)
    return LinkExpansion.for_config(config, graph)


def run_cli(args: argparse.Namespace) -> int:
    """``prime-retriever train``: load, split, encode, train, print the figures."""
    pred_cfg, train_cfg = _split_config(_read_config(args.config))
    for name in PredictorConfig.model_fields:
        if name in _PREDICTOR_FLAGS and getattr(args, name, None) is not None:
            pred_cfg[name] = getattr(args, name)
    for name in TrainingConfig.model_fields:
        if getattr(args, name, None) is not None:
            train_cfg[name] = getattr(args, name)
    train_cfg.setdefault("y_encoder_lr_multiplier", 0.0)

    ds = _load_data(args.data, args.framing, args.corpus)
    examples = list(ds.examples)
    corpus = ds.corpus
    if args.limit is not None:
        examples = examples[: args.limit]
        named = {d for e in examples for d in (*e.positive_ids, *e.negative_ids, *e.exclude_ids)}
        corpus = {k: v for k, v in ds.corpus.items() if k in named}
    train_ex, val_ex = split_examples(examples, args.eval_fraction, salt=str(args.seed))
    assert_disjoint(train_ex, val_ex)
    encoder_inner = HFTextEncoder(args.encoder)
    encoder = CachedEncoder(encoder_inner, EmbeddingCache(args.cache_dir) if args.cache_dir else None)
    pred_cfg.setdefault("input_dim", encoder.dim)
    pred_cfg.setdefault("output_dim", encoder.dim)
    pcfg = PredictorConfig(**pred_cfg)
    tcfg = TrainingConfig(**train_cfg)
    print(f"data: {ds.name}: {len(train_ex)} train / {len(val_ex)} held-out examples ({args.framing}), "
          f"corpus {len(corpus)} documents", flush=True)
    print(f"predictor: {pcfg.model_dump_json()}", flush=True)
    print(f"training: {tcfg.model_dump_json()}", flush=True)
    expansion = _expansion(pcfg, corpus, args.links, args.out)
    res = train_predictor(
        train_ex, val_ex, corpus, encoder, pcfg, tcfg, args.out,
        TrainOptions(max_steps=args.max_steps, time_budget_s=args.time_budget, seed=args.seed, precision=args.precision,
        num_hard_negatives=args.hard_negatives, patience=args.patience, accelerator=args.accelerator,
        devices=args.devices, strategy=args.strategy, logger="wandb" if args.wandb else "csv",
        progress_bar=not args.no_progress, dataset_names=[ds.name], num_threads=args.threads,
        expansion=expansion, mined_negatives=args.mined_negatives, query_only=args.query_only))
    print()
    print(f"steps: {res.steps} ({res.epochs} epochs, stopped by {res.stop_reason}), checkpoint: {res.checkpoint_path}")
    if res.stop_reason == "time_budget":
        print(time_budget_warning(args.time_budget, "--time-budget"), flush=True)
    print(f"final InfoNCE loss: {res.final_train_loss:.4f}")
    print(f"training throughput: {res.samples_per_second:.1f} samples/s")
    if res.best_metrics:
        b, i, q = res.best_metrics, res.initial_metrics, res.baseline_metrics
        print(f"validation on {len(val_ex)} held-out questions (corpus {len(corpus)} documents):")
        nan = float("nan")
        print(f"  predictor (best): R@10 {b.get('val_r@10', nan):.4f}  MRR {b.get('val_mrr', nan):.4f}")
        if q:
            print(f"  query-embedding baseline: R@10 {q['r@10']:.4f}  MRR {q['mrr']:.4f}")
        if i:
            print(f"  untrained predictor: R@10 {i['r@10']:.4f}  MRR {i['mrr']:.4f}")
    if res.score_confidence is not None:
        print(f"search-score confidence: {res.score_confidence.describe()}")
    else:  # searches then report the predictor's confidence head
        why = ("the Y-Encoder was fine-tuned: re-index the corpus first" if tcfg.y_encoder_lr_multiplier > 0
               else "it needs at least 2 validation questions")
        print(f"search-score confidence: not fitted ({why})")
    return 0
