"""OR-ShARC on the shipped dev/test files, and on small files the tests write."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from prime_retriever.errors import DataError
from training.convert import convert
from training.data import detect, load_dataset
from training.data.orsharc import load_orsharc


def _rec(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"utterance_id": "u1", "tree_id": "t1", "question": "Can I claim?",
                            "scenario": "I am 70.", "history": [{"follow_up_question": "Are you a carer?",
                                                                 "follow_up_answer": "No"}],
                            "gold_snippet_id": "2"}
    base.update(kw)
    return base


def _write(tmp: Path, lines: list[Any], snippets: Any = None) -> Path:
    (tmp / "id2snippet.json").write_text(json.dumps(snippets or {"1": "Rule one.", "2": "Rule two."}),
                                         encoding="utf-8")
    path = tmp / "open_retrieval_sharc_dev.json"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in lines), encoding="utf-8")
    return path


def test_shipped_files(prime_data_dir: Path) -> None:
    root = prime_data_dir / "orsharc"
    n = 0
    for name, lines in (("open_retrieval_sharc_dev.json", 1105), ("open_retrieval_sharc_test.json", 2373)):
        assert detect(root / name) == "orsharc"
        ds = load_dataset(root / name, "given")
        ds.validate()
        assert len(ds) + sum(ds.skipped.values()) == lines and len(ds.corpus) == 651
        n += len(ds)
        raw = [json.loads(x) for x in (root / name).read_text(encoding="utf-8").splitlines()]
        with_history = next(r for r in raw if r["history"] and r["scenario"])
        ex = next(e for e in ds.examples if e.id == f"orsharc:{with_history['utterance_id']}")
        assert ex.context[0] == "user: " + " ".join(with_history["scenario"].split())
        assert len(ex.context) == 1 + len(with_history["history"])
        assert ex.positive_ids == (f"orsharc:{with_history['gold_snippet_id']}",)
    assert n == 3478


def test_small_file_context_and_convert(tmp_path: Path) -> None:
    path = _write(tmp_path, [_rec(), _rec(utterance_id="u2", scenario="", history=[], gold_snippet_id="1"),
                             _rec()])
    ds = load_orsharc(path)
    a, b = ds.examples
    assert a.context == ("user: I am 70.", "system: Are you a carer? user: No") and a.query == "Can I claim?"
    assert a.group_id == b.group_id == "orsharc:t1"
    assert b.context == ("Can I claim?",) and b.positive_ids == ("orsharc:1",)  # no history: the query alone
    assert ds.skipped == {"repeated utterance_id": 1}
    merged = convert([path], "given")
    assert len(merged.examples) == 2 and set(merged.corpus) == {"orsharc:1", "orsharc:2"}


@pytest.mark.parametrize(("line2", "match"), [
    ('{"utterance_id": "u2", ', r"open_retrieval_sharc_dev\.json:2"),
    (_rec(utterance_id="u2", gold_snippet_id="77"), r"_dev\.json:2: gold snippet '77' is not in"),
    (_rec(utterance_id="u2", question=3), r"_dev\.json:2: key 'question' must be a string"),
    (_rec(utterance_id="u2", history={"a": 1}), r"_dev\.json:2: 'history' must be a list"),
    (_rec(utterance_id="u2", history=[{"follow_up_question": "q"}]), r"_dev\.json:2: key 'follow_up_answer'"),
])
def test_malformed_line_raises_data_error_naming_file_and_line(tmp_path: Path, line2: Any, match: str) -> None:
    with pytest.raises(DataError, match=match):
        load_orsharc(_write(tmp_path, [_rec(), line2]))


def test_missing_or_bad_snippet_file(tmp_path: Path) -> None:
    path = _write(tmp_path, [_rec()], snippets=["not", "a", "dict"])
    with pytest.raises(DataError, match=r"id2snippet\.json: expected a JSON object"):
        load_orsharc(path)
    (tmp_path / "id2snippet.json").unlink()
    with pytest.raises(DataError, match=r"id2snippet\.json: no such file"):
        load_orsharc(path)
