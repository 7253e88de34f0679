"""MS MARCO passage ranking: ``collection.tsv`` (pid\\ttext), ``queries.<split>.tsv`` (qid\\tquery), TREC qrels.

Qrels lines are ``qid 0 pid rel`` (whitespace-separated; ``qid\\tpid`` two-column files are also
accepted, rel = 1). Examples (framing ``given``): context = [query], query = the query text,
positives = the pids with rel > 0. Queries without a positive are skipped; a qrels pid missing
from the collection is an error. The corpus holds the whole collection (ids = pid strings).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from prime_retriever.errors import DataError
from prime_retriever.text.documents import Document
from training.data.examples import GIVEN, Dataset, Example, clean_text


def _tsv(path: str | Path) -> Iterator[tuple[str, str, str]]:
    """Yield ``(where, key, value)`` for each ``key\\tvalue`` line.

    Only ``\\n`` ends a line: a passage may hold a stray ``\\r``.
    """
    try:
        with open(path, encoding="utf-8", newline="\n") as fh:
            for n, line in enumerate(fh, start=1):
                line = line.rstrip("\n").rstrip("\r")
                if not line.strip():
                    continue
                key, sep, value = line.partition("\t")
                if not sep or not key.strip():
                    raise DataError(f"{path}:{n}: expected 'id<TAB>text'")
                yield f"{path}:{n}", key.strip(), value
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason})") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc}") from exc


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """qid → {pid: relevance} from a TREC (``qid 0 pid rel``) or two-column (``qid pid``) qrels file."""
    out: dict[str, dict[str, int]] = {}
    try:
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, start=1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) == 4:
                    qid, _, pid, rel_s = parts
                elif len(parts) == 2:
                    (qid, pid), rel_s = parts, "1"
                else:
                    raise DataError(f"{path}:{n}: expected 'qid 0 pid rel' or 'qid pid', got {len(parts)} fields")
                try:
                    rel = int(rel_s)
                except ValueError as exc:
                    raise DataError(f"{path}:{n}: relevance {rel_s!r} is not an integer") from exc
                out.setdefault(qid, {})[pid] = rel
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason})") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc}") from exc
    return out


def load_msmarco(collection: str | Path, queries: str | Path, qrels: str | Path, *,
                 name: str = "msmarco") -> Dataset:
    """MS MARCO passage ranking files as a :class:`Dataset`."""
    corpus: dict[str, Document] = {}
    for where, pid, text in _tsv(collection):
        if pid in corpus:
            raise DataError(f"{where}: duplicate passage id {pid!r}")
        corpus[pid] = Document(id=pid, text=clean_text(text))
    query_text: dict[str, str] = {}
    for where, qid, text in _tsv(queries):
        if qid in query_text:
            raise DataError(f"{where}: duplicate query id {qid!r}")
        query_text[qid] = clean_text(text)
    rels = read_qrels(qrels)
    examples: list[Example] = []
    skipped: dict[str, int] = {}
    for qid, text in query_text.items():
        positives = tuple(pid for pid, rel in rels.get(qid, {}).items() if rel > 0)
        if not positives:
            skipped["no relevant passage"] = skipped.get("no relevant passage", 0) + 1
            continue
        missing = [pid for pid in positives if pid not in corpus]
        if missing:
            raise DataError(f"{qrels}: query {qid!r} names passages not in {collection}: {missing[:5]}")
        examples.append(Example(id=qid, context=(text,), query=text, positive_ids=positives,
                                framing=GIVEN, source=name, group_id=qid))
    return Dataset(name=name, examples=examples, corpus=corpus, skipped=skipped)


def load_msmarco_dir(directory: str | Path, split: str = "dev") -> Dataset:
    """``collection.tsv``, ``queries.<split>.tsv`` and ``qrels.<split>.tsv`` from one directory."""
    d = Path(directory)
    return load_msmarco(d / "collection.tsv", d / f"queries.{split}.tsv", d / f"qrels.{split}.tsv",
                        name=f"msmarco/{split}")
