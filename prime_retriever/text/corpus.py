"""Corpus files: the generic JSONL corpus, one ``{"id", "text", "title"?, "scope"?}`` object a line."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from prime_retriever.errors import DataError
from prime_retriever.text.documents import Document
from prime_retriever.text.jsonl import iter_jsonl

__all__ = ["read_corpus_jsonl", "unique_documents"]


def _optional_str(rec: Mapping[str, Any], key: str, where: str) -> str:
    """``rec[key]`` as a string: "" when missing or null, a :class:`DataError` when not a string."""
    value = rec.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DataError(f"{where}: '{key}' must be a string")
    return value


def read_corpus_jsonl(path: str | os.PathLike[str], *, allow_duplicates: bool = False) -> list[Document]:
    """Read a generic JSONL corpus: one ``{"id": str, "text": str, "title": str?, "scope": str?}`` object a line.

    A repeated id is refused (naming both lines) unless ``allow_duplicates``: which of two documents
    the user meant cannot be guessed, and ``index``, ``links``, ``train`` and ``bench`` read corpora
    with this one rule.

    Raises:
        DataError: a line is not a JSON object or not valid Unicode, ``id``/``text`` is missing, empty
            or not a string, or (unless ``allow_duplicates``) an id repeats.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"corpus file not found: {p}")
    docs: list[Document] = []
    seen: dict[str, int] = {}  # id -> the line it was first read on
    for n, rec in iter_jsonl(p):
        where = f"{p}:{n}"
        doc_id, text = rec.get("id"), rec.get("text")
        if not isinstance(doc_id, str) or not doc_id:
            raise DataError(f"{where}: 'id' must be a non-empty string")
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{where}: 'text' must be a non-empty string")
        title, scope = _optional_str(rec, "title", where), _optional_str(rec, "scope", where)
        if not allow_duplicates and doc_id in seen:
            raise DataError(f"{where}: duplicate document id {doc_id!r} (first on line {seen[doc_id]})")
        seen.setdefault(doc_id, n)
        docs.append(Document(id=doc_id, text=text, title=title, scope=scope))
    return docs


def unique_documents(documents: Iterable[Document]) -> tuple[list[Document], int]:
    """``documents`` with each id once (its first document kept), and how many repeats were skipped."""
    seen: set[str] = set()
    out: list[Document] = []
    dup = 0
    for d in documents:
        if not isinstance(d, Document):
            raise DataError(f"expected Document objects, got {type(d).__name__}")
        if d.id in seen:
            dup += 1
            continue
        seen.add(d.id)
        out.append(d)
    return out, dup
