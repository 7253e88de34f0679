"""``prime-retriever convert``: write any supported dataset in the generic JSONL format.

Several inputs are merged: examples concatenated (deduplicated across files by group id and
question text), corpora pooled (first document per id wins). With several HotpotQA files the
paragraphs are pooled first, so gold paragraphs missing from one file (AMOR) are resolved from another.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from prime_retriever.errors import DataError
from training.data import (
    FRAMINGS,
    Dataset,
    dedupe_examples,
    detect,
    load_dataset,
    load_hotpotqa_pool,
    merge_datasets,
    write_generic,
)


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of the ``convert`` subcommand."""
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="dataset files (or an MS MARCO or DSTC11 directory)")
    parser.add_argument("--framing", required=True, choices=FRAMINGS)
    parser.add_argument("--out-examples", required=True, type=Path, help="examples JSONL to write")
    parser.add_argument("--out-corpus", required=True, type=Path, help="corpus JSONL to write")
    parser.add_argument("--sentence-turns", action="store_true",
                        help="multi_hop: give the known paragraph as one turn per sentence")
    parser.add_argument("--corpus", type=Path, default=None, 
                        help="corpus file of a generic/HippoRAG input (OR-ShARC: its id2snippet.json)")
    parser.add_argument("--split", default="dev", help="MS MARCO split (default: dev)")
    parser.add_argument("--extended", action="store_true",
                        help="also write framing, source, group_id and exclude_ids (scope is always written when set)")


def convert(inputs: list[Path], framing: str, *, sentence_turns: bool = False, corpus_path: Path | None = None,
            split: str = "dev") -> Dataset:
    """Load and merge ``inputs`` as described in the module doc."""
    hotpot = [p for p in inputs if detect(p) == "hotpotqa"]
    parts: list[Dataset] = []
    if len(hotpot) > 1:
        parts.append(load_hotpotqa_pool(hotpot, framing, sentence_turns=sentence_turns))
    for p in inputs:
        if len(hotpot) > 1 and p in hotpot:
            continue
        parts.append(load_dataset(p, framing, sentence_turns=sentence_turns, corpus_path=corpus_path, split=split))
    merged = parts[0] if len(parts) == 1 else merge_datasets("+".join(d.name for d in parts), parts)
    merged.examples = dedupe_examples(merged.examples)
    merged.validate()
    return merged


def run_cli(args: argparse.Namespace) -> int:
    """Run ``convert``; returns the exit status (2 on a data error)."""
    try:
        ds = convert([Path(p) for p in args.inputs], args.framing, sentence_turns=args.sentence_turns,
                     corpus_path=args.corpus, split=args.split)
        n_ex, n_docs = write_generic(ds, args.out_examples, args.out_corpus, extended=args.extended)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {n_ex} examples to {args.out_examples} and {n_docs} documents to {args.out_corpus}")
    for reason, n in sorted(ds.skipped.items()):
        print(f"skipped {n}: {reason}")
    return 0
