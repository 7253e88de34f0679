"""The generic JSONL corpus reader."""

from __future__ import annotations

from pathlib import Path

import pytest

from prime_retriever.errors import DataError
from prime_retriever.text.corpus import read_corpus_jsonl
from prime_retriever.text.documents import Document


def test_read_corpus_jsonl(tmp_path: Path) -> None:
    p = tmp_path / "c.jsonl"
    p.write_text('{"id": "a", "text": "x", "title": "A"}\n\n{"id": "b", "text": "y"}\n')
    assert read_corpus_jsonl(p) == [Document("a", "x", "A"), Document("b", "y", "")]
    p.write_text('{"id": "", "text": "x"}\n')
    with pytest.raises(DataError, match=":1: 'id'"):
        read_corpus_jsonl(p)
    p.write_text("[1, 2]\n")
    with pytest.raises(DataError, match="JSON object"):
        read_corpus_jsonl(p)
    with pytest.raises(DataError, match="not found"):
        read_corpus_jsonl(tmp_path / "missing.jsonl")


def test_a_corpus_text_that_is_not_unicode_is_refused_with_file_and_line(tmp_path: Path) -> None:
    from prime_retriever.errors import DataError
    from prime_retriever.text.corpus import read_corpus_jsonl

    p = tmp_path / "corpus.jsonl"
    p.write_text('{"id": "a", "text": "ok"}\n{"id": "b", "text": "x \\ud800 y"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"corpus\.jsonl:2: \$\.text is not valid Unicode"):
        read_corpus_jsonl(p)
