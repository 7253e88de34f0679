"""Generic format, splits and guards, collation, pre-encoding and the convert command."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from prime_retriever.errors import DataError
from prime_retriever.text.documents import Document
from prime_retriever.text.embedding_cache import CachedEncoder, EmbeddingCache
from prime_retriever.text.encoders import HFTextEncoder
from training.data import (
    Dataset,
    EncodedCorpus,
    EncodedExamples,
    Example,
    assert_disjoint,
    collate,
    dedupe_examples,
    load_dataset,
    merge_datasets,
    read_examples,
    read_generic,
    split_examples,
    write_generic,
)
from training.data.examples import question_key


def _ex(i: str, query: str = "", group: str = "", context: tuple[str, ...] = ("c",)) -> Example:
    return Example(id=i, context=context, query=query or f"question {i}?", positive_ids=("d1",), group_id=group)


# --- generic format -----------------------------------------------------------------------------------------

def test_generic_round_trip(tmp_path: Path) -> None:
    corpus = {"d1": Document("d1", "text one", "T1"), "d2": Document("d2", "text two")}
    examples = [Example(id="e1", context=("a", "b"), query="q1", positive_ids=("d1",), negative_ids=("d2",),
                        source="ex"),
                Example(id="e2", context=("x",), query="q2", positive_ids=("d2", "d1"), source="ex")]
    write_generic(Dataset("t", examples, corpus), tmp_path / "ex.jsonl", tmp_path / "corpus.jsonl")
    back = read_generic(tmp_path / "ex.jsonl", tmp_path / "corpus.jsonl")
    assert back.corpus == corpus and back.examples == examples
    line = json.loads((tmp_path / "ex.jsonl").read_text().splitlines()[0])
    assert set(line) == {"id", "context", "query", "positive_ids", "negative_ids"}
    # registry finds the sibling corpus.jsonl
    assert load_dataset(tmp_path / "ex.jsonl", "given").examples == examples


def test_generic_extended_keeps_groups(tmp_path: Path) -> None:
    ex = Example(id="q#mh0", context=("q", "p"), query="q", positive_ids=("d1",), framing="multi_hop",
                 group_id="q", exclude_ids=("d2",), source="s")
    corpus = {"d1": Document("d1", "a"), "d2": Document("d2", "b")}
    write_generic(Dataset("t", [ex], corpus), tmp_path / "e.jsonl", tmp_path / "c.jsonl", extended=True)
    assert read_generic(tmp_path / "e.jsonl", tmp_path / "c.jsonl").examples == [ex]


def test_generic_scopes_round_trip(tmp_path: Path) -> None:
    """A per-user memory: documents and questions carry a scope, and it survives the generic files."""
    ex = Example(id="e", context=("hi",), query="q", positive_ids=("d1",), scope="alice", source="t")
    corpus = {"d1": Document("d1", "a", scope="alice"), "d2": Document("d2", "b", scope="bob"),
              "d3": Document("d3", "c")}
    write_generic(Dataset("t", [ex], corpus), tmp_path / "e.jsonl", tmp_path / "c.jsonl")  # base format
    back = read_generic(tmp_path / "e.jsonl", tmp_path / "c.jsonl", name="t")
    assert back.examples == [ex] and back.corpus == corpus
    assert "scope" not in json.loads((tmp_path / "c.jsonl").read_text().splitlines()[2])  # unscoped: no key
    for bad in ("3", "0", "[]"):  # a falsy non-string is no more an empty scope than a truthy one
        (tmp_path / "c.jsonl").write_text(f'{{"id": "d1", "text": "t", "scope": {bad}}}\n')
        with pytest.raises(DataError, match=r"c.jsonl:1: 'scope' must be a string"):
            read_generic(tmp_path / "e.jsonl", tmp_path / "c.jsonl")


@pytest.mark.parametrize(("line", "message"), [
    ("{oops", r"e.jsonl:2: invalid JSON"),
    ('{"id": "b", "context": ["c"], "positive_ids": ["d1"]}', r"e.jsonl:2: missing key 'query'"),
    ('{"id": "b", "context": "c", "query": "q", "positive_ids": ["d1"]}', r"e.jsonl:2: key 'context' must be"),
    ('{"id": "b", "context": ["c"], "query": 3, "positive_ids": ["d1"]}', r"e.jsonl:2: key 'query' must be"),
    ('{"id": "b", "context": ["c"], "query": "q", "positive_ids": ["nope"]}', r"e.jsonl:2: positive ids not in"),
    ('{"id": "b", "context": ["c"], "query": "q", "positive_ids": []}', r"e.jsonl:2: 'positive_ids' is empty"),
    ('{"id": "a", "context": ["c"], "query": "q", "positive_ids": ["d1"]}', r"e.jsonl:2: duplicate example id"),
    ('[1, 2]', r"e.jsonl:2: expected a JSON object"),
    ('{"id": "b", "context": [], "query": "q", "positive_ids": ["d1"]}', r"e.jsonl:2: 'context' is empty"),
    ('{"id": "b", "context": ["c", " "], "query": "q", "positive_ids": ["d1"]}', r"e.jsonl:2: .*non-empty text"),
    ('{"id": "b", "context": ["c"], "query": "", "positive_ids": ["d1"]}', r"e.jsonl:2: .*non-empty text"),
])
def test_generic_malformed(tmp_path: Path, line: str, message: str) -> None:
    good = '{"id": "a", "context": ["c"], "query": "q", "positive_ids": ["d1"]}'
    (tmp_path / "e.jsonl").write_text(good + "\n" + line + "\n")
    with pytest.raises(DataError, match=message):
        read_examples(tmp_path / "e.jsonl", {"d1": Document("d1", "t")})


def test_generic_corpus_malformed(tmp_path: Path) -> None:
    (tmp_path / "c.jsonl").write_text('{"id": "d1", "text": "t"}\n{"id": "d1", "text": "u"}\n')
    with pytest.raises(DataError, match=r"c.jsonl:2: duplicate document id"):
        read_generic(tmp_path / "e.jsonl", tmp_path / "c.jsonl")
    (tmp_path / "c.jsonl").write_text('{"id": "d1"}\n')
    with pytest.raises(DataError, match=r"c.jsonl:1: 'text' must be a non-empty string"):
        read_generic(tmp_path / "e.jsonl", tmp_path / "c.jsonl")


def test_example_refuses_a_bare_string_where_a_sequence_belongs() -> None:
    with pytest.raises(DataError, match="context must be a sequence of strings"):
        Example(id="a", context="Who wrote it?", query="q", positive_ids=("d",))  # type: ignore[arg-type]
    with pytest.raises(DataError, match="positive_ids must be a sequence of strings"):
        Example(id="a", context=("c",), query="q", positive_ids="d1")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="every element of context must be a string"):
        Example(id="a", context=["c", None], query="q", positive_ids=("d",))  # type: ignore[arg-type]
    with pytest.raises(DataError, match="query must be a string"):
        Example(id="a", context=("c",), query=None, positive_ids=("d",))  # type: ignore[arg-type]
    assert Example(id="a", context=["c"], query="q", positive_ids=["d"]).context == ("c",)  # type: ignore[arg-type]  # lists become tuples


def test_merge_keeps_both_texts_of_a_clashing_id() -> None:
    a = Dataset("a", [Example(id="qa", context=("x",), query="x", positive_ids=("Kansas",))],
                {"Kansas": Document("Kansas", "The state."), "Same": Document("Same", "s")})
    b = Dataset("b", [Example(id="qb", context=("y",), query="y", positive_ids=("Kansas",), negative_ids=("Same",),
                              exclude_ids=("Kansas",))],
                {"Kansas": Document("Kansas", "The university."), "Same": Document("Same", "s")})
    merged = merge_datasets("ab", [a, b])
    assert sorted(merged.corpus) == ["Kansas", "Kansas@b", "Same"]  # an identical document is kept once
    assert merged.corpus["Kansas@b"].text == "The university."
    assert [e.positive_ids for e in merged.examples] == [("Kansas",), ("Kansas@b",)]
    assert merged.examples[1].exclude_ids == ("Kansas@b",) and merged.examples[1].negative_ids == ("Same",)
    merged.validate()


def test_merge_scores_musique_against_its_own_paragraphs(prime_data_dir: Path, hotpot_pool_first_hop: Dataset) -> None:
    # HotpotQA and MuSiQue both key paragraphs by bare title, with different texts for a few titles
    musique = load_dataset(prime_data_dir / "musique" / "hipporag_train100.json", "first_hop")
    merged = merge_datasets("both", [hotpot_pool_first_hop, musique])
    renamed = [i for i in merged.corpus if "@" in i]
    assert renamed and all(merged.corpus[i].title for i in renamed)
    by_id = {e.id: e for e in merged.examples}
    for ex in musique.examples:
        got = [merged.corpus[i].text for i in by_id[ex.id].positive_ids]
        assert got == [musique.corpus[i].text for i in ex.positive_ids]
    for ex in hotpot_pool_first_hop.examples:
        assert by_id[ex.id].positive_ids == ex.positive_ids


# --- splits -------------------------------------------------------------------------------------------------

def test_split_is_deterministic_and_grouped() -> None:
    examples = [_ex(f"q{i}#mh{k}", query=f"question {i}?", group=f"q{i}") for i in range(300) for k in range(2)]
    train, held = split_examples(examples, 0.2, salt="s")
    assert (train, held) == split_examples(list(examples), 0.2, salt="s")
    assert 0.1 < len(held) / len(examples) < 0.3 and len(train) + len(held) == len(examples)
    assert not {e.group_id for e in train} & {e.group_id for e in held}
    assert_disjoint(train, held)
    assert split_examples(examples, 0.2, salt="other") != (train, held)
    # adding examples never moves existing ones
    _, held2 = split_examples([*examples, _ex("new", group="new")], 0.2, salt="s")
    assert {e.id for e in held} <= {e.id for e in held2}


def test_split_links_duplicate_questions() -> None:
    # the same question under two ids from two files must land on one side
    examples = [e for i in range(200) for e in (_ex(f"a{i}", query=f"Q {i}?"), _ex(f"b{i}", query=f"q  {i}"))]
    train, held = split_examples(examples, 0.5, salt="x")
    assert held and train
    assert_disjoint(train, held)


def test_split_key_survives_a_copy_of_a_question_under_a_smaller_id() -> None:
    examples = [_ex(f"q{i:03d}", query=f"question {i}?", group=f"q{i:03d}") for i in range(200)]
    train, held = split_examples(examples, 0.3, salt="s")
    copies = [_ex(f"0copy{i:03d}", query=f"Question  {i}", group=f"0copy{i:03d}") for i in range(200)]
    train2, held2 = split_examples([*examples, *copies], 0.3, salt="s")
    assert {e.id for e in held} <= {e.id for e in held2} and {e.id for e in train} <= {e.id for e in train2}
    assert_disjoint(train2, held2)


def test_conversations_sharing_a_short_turn_are_not_linked() -> None:
    # "yes" recurs across unrelated dialogues: neither the split, the leak guard nor dedupe may treat it as one question
    dialogues = [Example(id=f"d{i}_{t}", context=(f"Can I renew licence {i} online?", *(["ok"] * t)), query="yes",
                         positive_ids=("d1",), group_id=f"d{i}", source="f") for i in range(300) for t in range(2)]
    train, held = split_examples(dialogues, 0.2, salt="s")
    assert 0.1 < len(held) / len(dialogues) < 0.3
    assert_disjoint(train, held)
    assert dedupe_examples(dialogues) == dialogues
    copy = Example(id="other", context=dialogues[0].context, query=" Yes!", positive_ids=("d1",), source="g")
    assert dedupe_examples([*dialogues, copy]) == dialogues  # the same conversation from another file is a duplicate
    with pytest.raises(DataError, match="shared query text"):
        assert_disjoint([dialogues[0]], [copy])


def test_question_key_of_a_query_repeated_as_its_context_is_the_query() -> None:
    first_hop = Example(id="a", context=("Who wrote Hamlet?",), query="Who wrote Hamlet?", positive_ids=("d",),
                        framing="first_hop")
    nq_style = Example(id="b", context=("who wrote hamlet",), query="Who wrote Hamlet?", positive_ids=("d",))
    assert question_key(first_hop) == question_key(nq_style) == "who wrote hamlet"
    assert question_key(_ex("c", query="Who wrote Hamlet?", context=("Tell me about plays.",))) \
        == "tell me about plays who wrote hamlet"


def test_assert_disjoint_refuses_leaks() -> None:
    with pytest.raises(DataError, match=r"shared id.*'e1'"):
        assert_disjoint([_ex("e1")], [_ex("e1")])
    with pytest.raises(DataError, match=r"shared group_id.*'g'.*train 'a'.*eval 'b'"):
        assert_disjoint([_ex("a", group="g")], [_ex("b", group="g")])
    with pytest.raises(DataError, match=r"shared query text.*train 'a'.*eval 'b'"):
        assert_disjoint([_ex("a", query="Who wrote  Hamlet?")], [_ex("b", query="who wrote hamlet")])
    assert_disjoint([_ex("a", query="Who wrote Hamlet?")], [_ex("b", query="who wrote hamlet")],
                    check_query_text=False)


def test_leaking_hotpot_split_is_refused(hotpot_pool_first_hop: Dataset) -> None:
    examples = hotpot_pool_first_hop.examples
    train, held = split_examples(examples, 0.2, salt="hotpot")
    assert_disjoint(train, held)
    leak = Example(id="copy", context=held[0].context, query=held[0].query.upper() + " ",
                   positive_ids=held[0].positive_ids)
    with pytest.raises(DataError, match="copy"):
        assert_disjoint([*train, leak], held)


def test_dedupe_examples() -> None:
    a = [Example(id=f"q#mh{k}", context=("Q?",), query="Q?", positive_ids=("d",), group_id="q", source="f1")
         for k in range(2)]
    b = [Example(id="q", context=("Q?",), query="Q?", positive_ids=("d",), source="f2"),       # same id/group
         Example(id="z", context=("q",), query="q", positive_ids=("d",), source="f2"),         # same text
         Example(id="y", context=("other",), query="other", positive_ids=("d",), source="f2")]
    assert [e.id for e in dedupe_examples([*a, *b])] == ["q#mh0", "q#mh1", "y"]


# --- collation ----------------------------------------------------------------------------------------------

def test_collate_pads_masks_and_truncates() -> None:
    d = 4
    ctx = [np.arange(3 * d, dtype=np.float64).reshape(3, d), np.ones((1, d)), np.full((5, d), 2.0)]
    queries = [np.full(d, float(i)) for i in range(3)]
    b = collate(ctx, queries, targets=queries)
    assert b.context.shape == (3, 5, d) and b.context.dtype == torch.float32
    assert b.context_mask.dtype == torch.bool and b.context_mask.sum(1).tolist() == [3, 1, 5]
    assert b.context_mask[0].tolist() == [True, True, True, False, False]
    assert torch.all(b.context[1, 1:] == 0) and b.query.shape == (3, d) and b.target is not None
    t = collate(ctx, queries, max_context_length=2)
    assert t.context.shape == (3, 2, d) and t.context_mask.sum(1).tolist() == [2, 1, 2]
    # truncation keeps the most recent turns, oldest first
    assert torch.equal(t.context[0], torch.tensor(ctx[0][1:], dtype=torch.float32))


def test_collate_errors() -> None:
    with pytest.raises(DataError, match="empty batch"):
        collate([], [])
    with pytest.raises(DataError, match="empty context"):
        collate([np.zeros((0, 3))], [np.zeros(3)])
    with pytest.raises(DataError, match="dim"):
        collate([np.zeros((1, 3))], [np.zeros(4)])
    with pytest.raises(DataError, match="max_context_length"):
        collate([np.zeros((1, 3))], [np.zeros(3)], max_context_length=0)


# --- pre-encoding -------------------------------------------------------------------------------------------

def test_encoded_examples_encode_each_text_once(minilm: HFTextEncoder, tmp_path: Path) -> None:
    corpus = {"d1": Document("d1", "one", "T"), "d2": Document("d2", "two")}
    examples = [Example(id="a", context=("Q?",), query="Q?", positive_ids=("d1",), negative_ids=("d2",)),
                Example(id="b", context=("Q?", "two"), query="Q?", positive_ids=("d2",), exclude_ids=("d1",))]
    enc = CachedEncoder(minilm, EmbeddingCache(tmp_path))
    ec = EncodedCorpus(corpus, enc)
    assert (enc.encode_calls, enc.encoded_texts) == (1, 2) and ec.rows(["d2"]) == (1,)
    np.testing.assert_allclose(ec.vectors, minilm.encode(["T: one", "two"]), atol=1e-6)
    ee = EncodedExamples(examples, enc, ec)
    # only "Q?" is new: "two" is served from the cache, and nothing is encoded twice
    assert (enc.encode_calls, enc.encoded_texts) == (2, 3)
    assert ee.rows[1].context == (0, 1) and ee.rows[1].query == 0 and ee.rows[1].positives == (1,)
    assert ee.rows[0].negatives == (1,) and ee.rows[1].excluded == (0,)
    b = ee.batch([0, 1])
    assert b.context.shape == (2, 2, 384) and b.context_mask.tolist() == [[True, False], [True, True]]
    assert b.target is not None and torch.allclose(b.target[1], torch.from_numpy(ec.vectors[1]))
    with pytest.raises(DataError, match="not in the encoded corpus"):
        EncodedExamples([Example(id="c", context=("x",), query="x", positive_ids=("zz",))], enc, ec)


# --- convert ------------------------------------------------------------------------------------------------

def test_convert_cli(prime_data_dir: Path, tmp_path: Path) -> None:
    from training import convert

    parser = argparse.ArgumentParser()
    convert.add_cli_arguments(parser)
    out_e, out_c = tmp_path / "e.jsonl", tmp_path / "c.jsonl"
    args = parser.parse_args([str(prime_data_dir / "hotpotqa" / "rpt_dev.jsonl"),
                              str(prime_data_dir / "hotpotqa" / "amor_dev.jsonl"), "--framing", "multi_hop",
                              "--out-examples", str(out_e), "--out-corpus", str(out_c), "--extended"])
    assert convert.run_cli(args) == 0
    ds = read_generic(out_e, out_c)
    assert ds.examples and all(e.framing == "multi_hop" and e.exclude_ids for e in ds.examples)
    bad = parser.parse_args([str(prime_data_dir / "hotpotqa" / "ecm_train_evidence.jsonl"), "--framing", "first_hop",
                             "--out-examples", str(out_e), "--out-corpus", str(out_c)])
    assert convert.run_cli(bad) == 2
