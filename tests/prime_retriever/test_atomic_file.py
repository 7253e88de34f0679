"""Atomic file replacement: readers see the old file or the new one; a failure leaves the old file and no temp file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from prime_retriever.atomic_file import write_bytes_atomic, write_lines_atomic


def test_write_bytes_atomic_replaces_the_file(tmp_path: Path) -> None:
    p = tmp_path / "meta.json"
    write_bytes_atomic(p, b"old")
    write_bytes_atomic(p, b"new")
    assert p.read_bytes() == b"new" and [x.name for x in tmp_path.iterdir()] == ["meta.json"]


def test_write_lines_atomic_streams_utf8_lines(tmp_path: Path) -> None:
    p = tmp_path / "corpus.jsonl"
    assert write_lines_atomic(p, iter(["a", "ü €", ""])) == 3
    assert p.read_bytes() == "a\nü €\n\n".encode()
    assert write_lines_atomic(p, []) == 0 and p.read_bytes() == b""


def test_a_failure_part_way_keeps_the_old_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    p = tmp_path / "corpus.jsonl"
    write_lines_atomic(p, ["kept"])

    def broken() -> Iterator[str]:
        yield "half"
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_lines_atomic(p, broken())
    with pytest.raises(UnicodeEncodeError):
        write_lines_atomic(p, ["x", "\udc80"])  # a lone surrogate has no UTF-8 form
    assert p.read_text() == "kept\n" and [x.name for x in tmp_path.iterdir()] == ["corpus.jsonl"]
    with pytest.raises(FileNotFoundError):
        write_bytes_atomic(tmp_path / "missing" / "f", b"x")
    assert [x.name for x in tmp_path.iterdir()] == ["corpus.jsonl"]
