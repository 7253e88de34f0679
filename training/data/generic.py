"""The generic JSONL format every dataset can be converted to.

Examples file, one JSON object a line::

    {"id": str, "context": [str, ...], "query": str, "positive_ids": [str, ...], "negative_ids": [str, ...],
     "scope": str}

``negative_ids`` is optional. ``scope`` is optional and written whenever set: the question searches only
the documents of that scope (e.g. the user's own conversation); dropping it would change the task.
Documented optional extensions, written only with ``extended=True`` and read when present: ``framing``,
``source``, ``group_id``, ``exclude_ids``.

Corpus file, one JSON object a line: ``{"id": str, "text": str, "title": str, "scope": str}`` (``title``
and ``scope`` optional).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from prime_retriever.atomic_file import write_lines_atomic
from prime_retriever.errors import DataError
from prime_retriever.text.corpus import read_corpus_jsonl
from prime_retriever.text.documents import Document
from prime_retriever.text.jsonl import iter_jsonl
from training.data.examples import GIVEN, Dataset, Example


def _str(rec: Mapping[str, Any], key: str, where: str, *, required: bool = True, default: str = "") -> str:
    if key not in rec:
        if required:
            raise DataError(f"{where}: missing key {key!r}")
        return default
    v = rec[key]
    if not isinstance(v, str):
        raise DataError(f"{where}: key {key!r} must be a string, got {type(v).__name__}")
    return v


def _str_list(rec: Mapping[str, Any], key: str, where: str, *, required: bool = True) -> tuple[str, ...]:
    if key not in rec:
        if required:
            raise DataError(f"{where}: missing key {key!r}")
        return ()
    v = rec[key]
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise DataError(f"{where}: key {key!r} must be a list of strings")
    return tuple(v)


def read_corpus(path: str | Path) -> dict[str, Document]:
    """Read a generic corpus file (the runtime's reader); duplicate ids are an error."""
    return {doc.id: doc for doc in read_corpus_jsonl(path, allow_duplicates=False)}


def read_examples(path: str | Path, corpus: Mapping[str, Document] | None = None, *,
                  framing: str = GIVEN, source: str = "") -> list[Example]:
    """Read a generic examples file; with ``corpus``, every positive (and negative) id must be in it.

    ``framing`` and ``source`` apply to lines that do not carry their own (extension keys).
    """
    examples: list[Example] = []
    seen: set[str] = set()
    for n, rec in iter_jsonl(path):
        where = f"{path}:{n}"
        ex_id = _str(rec, "id", where)
        if not ex_id:
            raise DataError(f"{where}: empty 'id'")
        if ex_id in seen:
            raise DataError(f"{where}: duplicate example id {ex_id!r}")
        seen.add(ex_id)
        positives = _str_list(rec, "positive_ids", where)
        if not positives:
            raise DataError(f"{where}: 'positive_ids' is empty")
        negatives = _str_list(rec, "negative_ids", where, required=False)
        excluded = _str_list(rec, "exclude_ids", where, required=False)
        if corpus is not None:
            for kind, ids in (("positive", positives), ("negative", negatives), ("excluded", excluded)):
                missing = [i for i in ids if i not in corpus]
                if missing:
                    raise DataError(f"{where}: {kind} ids not in the corpus: {missing[:5]}")
        context, query = _str_list(rec, "context", where), _str(rec, "query", where)
        # what collate and the retriever refuse is refused here, where the file and line are known
        if not context:
            raise DataError(f"{where}: 'context' is empty (give at least one turn; the query may repeat as one)")
        if not query.strip() or not all(t.strip() for t in context):
            raise DataError(f"{where}: the query and every context turn must be non-empty text")
        try:
            examples.append(Example(
                id=ex_id, context=context, query=query,
                positive_ids=positives, negative_ids=negatives,
                framing=_str(rec, "framing", where, required=False, default=framing),
                source=_str(rec, "source", where, required=False, default=source),
                group_id=_str(rec, "group_id", where, required=False), exclude_ids=excluded,
                scope=_str(rec, "scope", where, required=False)))
        except DataError as exc:
            raise DataError(f"{where}: {exc}") from exc
    return examples


def read_generic(examples_path: str | Path, corpus_path: str | Path, *, name: str | None = None,
                 framing: str = GIVEN) -> Dataset:
    """Read a generic examples file and its corpus as a validated :class:`Dataset`."""
    corpus = read_corpus(corpus_path)
    label = name or Path(examples_path).stem
    return Dataset(name=label, examples=read_examples(examples_path, corpus, framing=framing, source=label),
                   corpus=corpus)


def example_record(ex: Example, *, extended: bool = False) -> dict[str, Any]:
    """The JSON object of one example."""
    rec: dict[str, Any] = {"id": ex.id, "context": list(ex.context), "query": ex.query,
                           "positive_ids": list(ex.positive_ids), "negative_ids": list(ex.negative_ids)}
    if extended:
        rec.update(framing=ex.framing, source=ex.source, group_id=ex.group_id, exclude_ids=list(ex.exclude_ids))
    if ex.scope:
        rec["scope"] = ex.scope
    return rec


def _write_lines(path: str | Path, lines: Iterable[str]) -> int:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return write_lines_atomic(path, lines)


def write_examples(path: str | Path, examples: Iterable[Example], *, extended: bool = False) -> int:
    """Write examples (atomically); returns the number of lines written."""
    return _write_lines(path, (json.dumps(example_record(e, extended=extended), ensure_ascii=False)
                               for e in examples))


def corpus_record(d: Document) -> dict[str, str]:
    """The JSON object of one document (``scope`` only when set)."""
    rec = {"id": d.id, "text": d.text, "title": d.title}
    if d.scope:
        rec["scope"] = d.scope
    return rec


def write_corpus(path: str | Path, corpus: Iterable[Document]) -> int:
    """Write documents (atomically); returns the number of lines written."""
    return _write_lines(path, (json.dumps(corpus_record(d), ensure_ascii=False) for d in corpus))


def write_generic(dataset: Dataset, examples_path: str | Path, corpus_path: str | Path, *,
                  extended: bool = False) -> tuple[int, int]:
    """Write a dataset's examples and corpus; returns (examples written, documents written)."""
    return (write_examples(examples_path, dataset.examples, extended=extended),
            write_corpus(corpus_path, dataset.corpus.values()))
