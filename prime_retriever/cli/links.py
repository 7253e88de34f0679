"""``prime-retriever links``: build a corpus's title-mention link graph (for link expansion)."""

from __future__ import annotations

import argparse
from pathlib import Path

from prime_retriever.cli.arg_types import positive_int
from prime_retriever.retrieval.link_graph import LinkGraph
from prime_retriever.text.corpus import read_corpus_jsonl, unique_documents


def add_cli_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("corpus", type=Path, help="a generic JSONL corpus ({id, text, title} a line)")
    p.add_argument("--out", type=Path, required=True, help="where to write the graph (JSON)")
    p.add_argument("--max-links", type=positive_int, default=8, help="documents mentioning more titles get no links")


def run_cli(args: argparse.Namespace) -> int:
    # a repeated id keeps its first document, as `prime-retriever index` does, so the graph matches the index
    docs, duplicates = unique_documents(read_corpus_jsonl(args.corpus))
    graph = LinkGraph.build(docs, max_links=args.max_links, show_progress=True)
    graph.save(args.out)
    dup = f" ({duplicates} repeated ids skipped, the first kept)" if duplicates else ""
    print(f"{args.out}: {len(docs)} documents{dup}, {len(graph)} link to others, {graph.num_links} links")
    return 0
