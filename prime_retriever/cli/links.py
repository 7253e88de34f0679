"""``prime-retriever links``: build a corpus's title-mention link graph (for link expansion)."""

from __future__ import annotations

import argparse
from pathlib import Path

from prime_retriever.cli.arg_types import positive_int
from prime_retriever.retrieval.link_graph import LinkGraph
from prime_retriever.text.corpus import read_corpus_jsonl


def add_cli_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("corpus", type=Path, help="a generic JSONL corpus ({id, text, title} a line)")
    p.add_argument("--out", type=Path, required=True, help="where to write the graph (JSON)")
    p.add_argument("--max-links", type=positive_int, default=8, help="documents mentioning more titles get no links")


def run_cli(args: argparse.Namespace) -> int:
    docs = read_corpus_jsonl(args.corpus)  # a repeated id is refused, naming its line, as index/train/bench do
    graph = LinkGraph.build(docs, max_links=args.max_links, show_progress=True)
    graph.save(args.out)
    print(f"{args.out}: {len(docs)} documents, {len(graph)} link to others, {graph.num_links} links")
    return 0
