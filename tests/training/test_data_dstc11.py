"""DSTC11 Track 5 on the shipped validation split, and on small files the tests write."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from prime_retriever.errors import DataError
from training.convert import convert
from training.data import detect, load_dataset, split_examples
from training.data.dstc11 import load_dstc11

KNOWLEDGE = {"hotel": {"7": {"name": "Blue Inn",
                             "reviews": {"0": {"sentences": {"0": "Quiet rooms.", "1": "Slow wifi."}}},
                             "faqs": {"3": {"question": "Is there parking?", "answer": "Yes, free."}}}}}


def _write(tmp: Path, logs: Any, labels: Any, knowledge: Any = KNOWLEDGE) -> Path:
    for name, obj in (("val_logs.json", logs), ("val_labels.json", labels), ("knowledge.json", knowledge)):
        (tmp / name).write_text(obj if isinstance(obj, str) else json.dumps(obj, indent=1), encoding="utf-8")
    return tmp


def _turns(*texts: str) -> list[dict[str, str]]:
    return [{"speaker": "U" if i % 2 == 0 else "S", "text": t} for i, t in enumerate(texts)]


def test_shipped_val_split(prime_data_dir: Path) -> None:
    root = prime_data_dir / "dstc11"
    assert detect(root) == detect(root / "val_logs.json") == "dstc11"
    ds = load_dataset(root, "given")
    ds.validate()
    labels = json.loads((root / "val_labels.json").read_text(encoding="utf-8"))
    # every knowledge-seeking turn is an example, every other turn is counted as skipped
    assert len(ds) == sum(lab["target"] for lab in labels) == 2129
    assert sum(ds.skipped.values()) == len(labels) - 2129
    assert sum(":faq:" in i for i in ds.corpus) == 2869 and sum(":review:" in i for i in ds.corpus) == 8013
    ex = ds.examples[0]
    assert ex.context[0].startswith("user: ") and all(t.startswith(("user: ", "system: ")) for t in ex.context)
    assert ex.query == labels_first_target_query(root)
    # a snippet carries its entity's name: review sentences of two hotels would read alike
    assert all(d.title for d in ds.corpus.values())
    train, held = split_examples(ds.examples, 0.3, salt="t")
    assert not {e.group_id for e in train} & {e.group_id for e in held}


def labels_first_target_query(root: Path) -> str:
    logs = json.loads((root / "val_logs.json").read_text(encoding="utf-8"))
    labels = json.loads((root / "val_labels.json").read_text(encoding="utf-8"))
    i = next(k for k, lab in enumerate(labels) if lab["target"])
    return " ".join(str(logs[i][-1]["text"]).split())


def test_small_file_roles_golds_and_skips(tmp_path: Path) -> None:
    root = _write(tmp_path, [_turns("Hi, a hotel please.", "Blue Inn?", "Is the wifi fast?"), _turns("Thanks!")],
                  [{"target": True, "knowledge": [{"domain": "hotel", "entity_id": 7, "doc_type": "review",
                                                   "doc_id": 0, "sent_id": 1},
                                                  {"domain": "hotel", "entity_id": 7, "doc_type": "faq",
                                                   "doc_id": 3}]},
                   {"target": False}])
    ds = load_dstc11(root)
    assert [e.id for e in ds.examples] == ["dstc11:val:0"]
    ex = ds.examples[0]
    assert ex.context == ("user: Hi, a hotel please.", "system: Blue Inn?") and ex.query == "Is the wifi fast?"
    assert ex.positive_ids == ("dstc11:hotel:7:review:0:1", "dstc11:hotel:7:faq:3")
    assert ds.corpus["dstc11:hotel:7:faq:3"].encoding_text == "Blue Inn: Is there parking? Yes, free."
    assert ds.skipped == {"no knowledge needed (target: false)": 1}
    merged = convert([root], "given")  # prime-retriever convert reads the directory too
    assert [e.id for e in merged.examples] == ["dstc11:val:0"] and len(merged.corpus) == 3


def test_invalid_json_names_file_and_line(tmp_path: Path) -> None:
    root = _write(tmp_path, '[\n [{"speaker": "U",\n   "text": "hi"}\n', [{"target": False}])
    with pytest.raises(DataError, match=r"val_logs\.json:4: invalid JSON"):
        load_dstc11(root)


@pytest.mark.parametrize(("logs", "labels", "match"), [
    ([_turns("a")], [{"target": True, "knowledge": [{"domain": "hotel", "entity_id": 7, "doc_type": "faq",
                                                       "doc_id": 99}]}],
     r"val_labels\.json\[0\]: gold snippets not in"),
    ([_turns("a"), _turns("b")], [{"target": False}], r"1 labels for 2 dialogue contexts"),
    ([[{"speaker": "X", "text": "a"}]], [{"target": True, "knowledge": []}], r"val_logs\.json\[0\]: a turn's speaker"),
    ([_turns("a", "b")], [{"target": True, "knowledge": [{"domain": "hotel"}]}], r"the last turn is not a user turn"),
    ([_turns("a")], [{"target": "yes"}], r"val_labels\.json\[0\]: 'target' must be true or false"),
    ([_turns("a")], [{"target": True, "knowledge": [{"domain": "hotel", "entity_id": 7, "doc_type": "blog",
                                                       "doc_id": 0}]}], r"unknown doc_type 'blog'"),
])
def test_malformed_records_raise_data_error_naming_the_record(tmp_path: Path, logs: Any, labels: Any,
                                                              match: str) -> None:
    with pytest.raises(DataError, match=match):
        load_dstc11(_write(tmp_path, logs, labels))


def test_missing_knowledge_file_and_wrong_framing(tmp_path: Path) -> None:
    root = _write(tmp_path, [_turns("a")], [{"target": False}])
    with pytest.raises(DataError, match="only the 'given' framing"):
        load_dataset(root, "first_hop")
    (root / "knowledge.json").unlink()
    with pytest.raises(DataError, match=r"knowledge\.json: no such file"):
        load_dstc11(root / "val_logs.json")
