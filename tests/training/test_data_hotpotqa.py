"""HotpotQA readers and framings on the shipped files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prime_retriever.errors import DataError
from training.data import load_dataset, load_ecm, load_hotpotqa, read_hotpotqa
from training.data.examples import Dataset, join_sentences, normalize_question

HOTPOT = ["ircot_dev500.jsonl", "rpt_train.jsonl", "rpt_dev.jsonl", "amor_dev.jsonl", "amor_test.jsonl",
          "hipporag_train100.json"]


def _count_lines(path: Path) -> int:
    if path.suffix == ".json":
        return len(json.loads(path.read_text()))
    return sum(1 for line in path.open() if line.strip())


@pytest.mark.parametrize("name", HOTPOT)
def test_first_hop_every_file(prime_data_dir: Path, name: str) -> None:
    path = prime_data_dir / "hotpotqa" / name
    ds = load_hotpotqa(path, "first_hop")
    ds.validate()
    # every question is either an example or counted as skipped
    assert len(ds.examples) + sum(ds.skipped.values()) == _count_lines(path)
    for ex in ds.examples:
        assert ex.framing == "first_hop" and ex.context == (ex.query,) and ex.group_id == ex.id
        assert len(ex.positive_ids) == 2 and all(p in ds.corpus for p in ex.positive_ids)
        assert not set(ex.positive_ids) & set(ex.negative_ids)
        assert all(ds.corpus[p].title == p for p in ex.positive_ids)


def test_ircot_facts(prime_data_dir: Path) -> None:
    path = prime_data_dir / "hotpotqa" / "ircot_dev500.jsonl"
    ds = load_hotpotqa(path, "first_hop")
    assert len(ds.examples) == _count_lines(path) > 400 and not ds.skipped
    raw = json.loads(path.open().readline())
    gold = {c["title"] for c in raw["contexts"] if c["is_supporting"]}
    ex = ds.examples[0]
    assert ex.id == raw["question_id"] and set(ex.positive_ids) == gold
    assert len(ex.negative_ids) == len({c["title"] for c in raw["contexts"]}) - 2
    # text is the paragraph with whitespace collapsed
    para = next(c for c in raw["contexts"] if c["title"] == ex.positive_ids[0])
    assert ds.corpus[ex.positive_ids[0]].text == " ".join(para["paragraph_text"].split())


def test_multi_hop_framing(prime_data_dir: Path) -> None:
    path = prime_data_dir / "hotpotqa" / "rpt_dev.jsonl"
    first = load_hotpotqa(path, "first_hop")
    multi = load_hotpotqa(path, "multi_hop")
    multi.validate()
    assert len(multi.examples) == 2 * len(first.examples)
    by_q = {ex.id: ex for ex in first.examples}
    for ex in multi.examples:
        qid, _, k = ex.id.rpartition("#mh")
        assert k in ("0", "1") and ex.group_id == qid
        gold = by_q[qid].positive_ids
        (given,) = ex.exclude_ids
        assert {given, *ex.positive_ids} == set(gold) and given not in ex.positive_ids
        assert ex.context == (ex.query, multi.corpus[given].text)
    assert multi.examples[0].positive_ids == multi.examples[1].exclude_ids


def test_multi_hop_sentence_turns(prime_data_dir: Path) -> None:
    path = prime_data_dir / "hotpotqa" / "hipporag_train100.json"
    ds = load_hotpotqa(path, "multi_hop", sentence_turns=True)
    raw = json.loads(path.read_text())[0]
    ex = ds.examples[0]
    sentences = dict((t, s) for t, s in raw["context"])[ex.exclude_ids[0]]
    assert ex.context[0] == raw["question"]
    assert ex.context[1:] == tuple(s.strip() for s in sentences if s.strip())
    assert " ".join(ex.context[1:]) == ds.corpus[ex.exclude_ids[0]].text


def test_hipporag_corpus_is_added(prime_data_dir: Path) -> None:
    d = prime_data_dir / "hotpotqa"
    corpus = json.loads((d / "hipporag_train100_corpus.json").read_text())
    ds = load_hotpotqa(d / "hipporag_train100.json", "first_hop")
    assert set(corpus) <= set(ds.corpus)
    title = next(iter(corpus))
    assert ds.corpus[title].text == join_sentences(corpus[title])


def test_amor_gold_resolution(prime_data_dir: Path) -> None:
    d = prime_data_dir / "hotpotqa"
    hf = read_hotpotqa(d / "amor_test.jsonl")
    assert hf.format == "official" and hf.skipped  # some gold paragraphs are nowhere in the file
    for q in hf.questions:
        assert all(any(p.id == g for p in q.paragraphs) for g in q.gold_ids)
    # a gold paragraph given by an external pool resolves a skipped question
    raw = [json.loads(line) for line in (d / "amor_test.jsonl").open()]
    missing = next(r for r in raw if any(sf[0] not in {c[0] for c in r["context"]} for sf in r["supporting_facts"]))
    pool = {sf[0]: ("Some text.",) for sf in missing["supporting_facts"]}
    resolved = read_hotpotqa(d / "amor_test.jsonl", extra_paragraphs=pool)
    assert missing["_id"] in {q.id for q in resolved.questions}


def test_pooled_corpus(hotpot_pool_first_hop: Dataset) -> None:
    ds = hotpot_pool_first_hop
    ds.validate()
    assert 12_000 < len(ds.corpus) < 16_000
    keys = [normalize_question(e.query) for e in ds.examples]
    assert len(keys) == len(set(keys)) and len({e.id for e in ds.examples}) == len(ds.examples)
    # pooling resolves some AMOR questions that the file alone cannot
    assert sum(ds.skipped.values()) < 320


def test_ecm_given_only(prime_data_dir: Path) -> None:
    path = prime_data_dir / "hotpotqa" / "ecm_train_evidence.jsonl"
    ds = load_ecm(path)
    ds.validate()
    lines = [x for x in path.open() if x.strip()]
    assert len(ds.examples) == len({normalize_question(json.loads(x)["question"]) for x in lines})
    assert ds.skipped.get("duplicate question", 0) == len(lines) - len(ds.examples)  # counted, not lost silently
    ex = ds.examples[0]
    assert ex.framing == "given" and ex.positive_ids == (ex.id,) and ex.id.startswith("ecm:")
    with pytest.raises(DataError, match="only the 'given' framing"):
        load_dataset(path, "first_hop")
    assert len(load_dataset(path, "given")) == len(ds)


def test_ecm_counts_a_repeated_question(tmp_path: Path) -> None:
    path = tmp_path / "ecm_x.jsonl"
    path.write_text('{"question": "Who?", "evidence": ["a."]}\n{"question": "who", "evidence": ["b."]}\n')
    ds = load_ecm(path)
    assert len(ds.examples) == 1 and ds.skipped == {"duplicate question": 1}


def test_malformed_hotpot_record(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x", "question": "q?", "context": {"title": ["a"], "sentences": []},
                               "supporting_facts": {"title": ["a"], "sent_id": [0]}}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:1: .*equal length"):
        load_hotpotqa(bad, "first_hop")
    bad.write_text("{not json\n")
    with pytest.raises(DataError, match=r"bad.jsonl:1: invalid JSON"):
        load_hotpotqa(bad, "first_hop")
