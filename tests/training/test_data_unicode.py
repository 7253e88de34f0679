"""Issue 30: a string that is not valid Unicode (a JSON ``\\ud800`` escape) is refused while reading, at file:line."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from prime_retriever.errors import DataError
from training.data.generic import read_examples
from training.data.jsonio import iter_records, load_json
from training.data.locomo import load_locomo
from training.data.registry import load_dataset


def test_generic_examples_and_corpus_refuse_a_lone_surrogate(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"id": "d1", "text": "a document"}\n', encoding="utf-8")
    ex = tmp_path / "e.jsonl"
    ex.write_text('{"id": "q1", "context": ["hi"], "query": "fine", "positive_ids": ["d1"]}\n'
                  '{"id": "q2", "context": ["hi"], "query": "bad \\udcff", "positive_ids": ["d1"]}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"e\.jsonl:2: \$\.query is not valid Unicode"):
        read_examples(ex)
    with pytest.raises(DataError, match=r"e\.jsonl:2: \$\.query is not valid Unicode"):
        load_dataset(ex, "given", corpus_path=corpus)
    corpus.write_text('{"id": "d1", "text": "a document"}\n{"id": "d2", "title": "\\ud800", "text": "t"}\n',
                      encoding="utf-8")
    with pytest.raises(DataError, match=r"corpus\.jsonl:2: \$\.title is not valid Unicode"):
        load_dataset(ex, "given", corpus_path=corpus)


def test_whole_json_files_name_the_line_of_the_escape(tmp_path: Path) -> None:
    p = tmp_path / "d.json"
    p.write_text('[\n  {"question": "ok"},\n  {"question": "x \\ud800"}\n]\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"d\.json:3: \$\[1\]\.question is not valid Unicode"):
        load_json(p)
    with pytest.raises(DataError, match=r"d\.json:3:"):
        list(iter_records(p))


def test_locomo_members_refuse_a_lone_surrogate(tmp_path: Path) -> None:
    p = tmp_path / "locomo.zip"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("conv-1.json", '{"qa": [],\n "session_1": [{"dia_id": "D1:1", "text": "\\udfff"}]}')
    with pytest.raises(DataError, match=r"locomo\.zip!conv-1\.json:2: \$\.session_1\[0\]\.text is not valid Unicode"):
        load_locomo(p)
