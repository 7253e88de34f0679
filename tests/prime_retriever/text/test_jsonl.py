"""JSON-lines reading: every failure is a DataError naming the file (and the line, where there is one)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from prime_retriever.errors import DataError
from prime_retriever.text.jsonl import iter_jsonl


def test_objects_come_with_their_line_numbers_and_blank_lines_are_skipped(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    p.write_text('{"a": 1}\n\n{"b": 2}\n', encoding="utf-8")
    assert list(iter_jsonl(p)) == [(1, {"a": 1}), (3, {"b": 2})]


def test_gzipped_files_are_read(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl.gz"
    with gzip.open(p, "wt", encoding="utf-8") as f:
        f.write('{"a": 1}\n')
    assert list(iter_jsonl(p)) == [(1, {"a": 1})]


@pytest.mark.parametrize(
    ("content", "match"),
    [(b'{"a": 1}\n{oops\n', r"a\.jsonl:2: invalid JSON"), (b"[1, 2]\n", r"a\.jsonl:1: expected a JSON object"),
     (b'{"a": "\xff"}\n', "not UTF-8")],
)
def test_bad_lines_name_the_file_and_line(tmp_path: Path, content: bytes, match: str) -> None:
    p = tmp_path / "a.jsonl"
    p.write_bytes(content)
    with pytest.raises(DataError, match=match):
        list(iter_jsonl(p))


def test_a_truncated_gzip_and_a_missing_file_are_data_errors(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl.gz"
    with gzip.open(p, "wt", encoding="utf-8") as f:
        f.write('{"a": 1}\n' * 1000)
    p.write_bytes(p.read_bytes()[:40])
    with pytest.raises(DataError, match="cannot read"):
        list(iter_jsonl(p))
    with pytest.raises(DataError, match="cannot read"):
        list(iter_jsonl(tmp_path / "missing.jsonl"))


def test_a_lone_surrogate_escape_is_refused_naming_file_line_and_field(tmp_path: Path) -> None:
    p = tmp_path / "c.jsonl"
    p.write_text('{"id": "a", "text": "fine"}\n{"id": "b", "text": "bad \\ud800 text"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"c\.jsonl:2: \$\.text is not valid Unicode"):
        list(iter_jsonl(p))
    p.write_text('{"id": "a", "meta": {"k\\udcff": 1}}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"c\.jsonl:1: \$\.meta \(a key\) is not valid Unicode"):
        list(iter_jsonl(p))
    p.write_text('{"id": "a", "turns": ["x", "\\uDFFF"]}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"c\.jsonl:1: \$\.turns\[1\]"):
        list(iter_jsonl(p))


def test_a_surrogate_pair_escape_and_a_literal_backslash_u_are_valid(tmp_path: Path) -> None:
    p = tmp_path / "c.jsonl"
    p.write_text('{"t": "\\ud83d\\ude00"}\n{"t": "a \\\\ud800 literal"}\n', encoding="utf-8")
    assert list(iter_jsonl(p)) == [(1, {"t": "\U0001f600"}), (2, {"t": "a \\ud800 literal"})]


def test_json_nested_too_deeply_is_a_data_error(tmp_path: Path) -> None:
    p = tmp_path / "c.jsonl"
    p.write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"c\.jsonl:1: JSON nested too deeply"):
        list(iter_jsonl(p))
