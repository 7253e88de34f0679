"""Masked-bridge pairs: the title is cut from a clean mention only, and held-out or private documents never appear."""

from __future__ import annotations

import pytest

from prime_retriever.errors import PrimeError
from prime_retriever.retrieval.link_graph import LinkGraph
from prime_retriever.text.documents import Document
from tests.prime_retriever.retrieval.test_retriever import hotpot_sample
from training.bench.recipe import Recipe, suite_bridge_examples
from training.bench.suite import BenchSuite
from training.bridge_pairs import BRIDGE_SOURCE, bridge_examples, mask_title
from training.data.examples import FIRST_HOP, Example, split_sentences


@pytest.mark.parametrize(
    ("sentence", "title", "expected"),
    [
        ("It was directed by Willi Forst in Vienna.", "Willi Forst", "It was directed by in Vienna."),
        ("A town in Clark County, Nevada.", "Nevada (1944 film)", "A town in Clark County, ."),  # qualifier dropped
        ('Their 1985 album "Brothers in Arms".', "Brothers in Arms (album)", 'Their 1985 album " ".'),
        ("Films by Atom Egoyan and others.", "Atom", None),  # part of a longer name
        ('The film "Casino Royale" opened.', "Casino (1995 film)", None),
        ("a stripped-down sound", "Stripped (tour)", None),  # not capitalised: a word, not a name
        ("Nothing to see here.", "Willi Forst", None),
        ("Anything at all.", "(1995 film)", None),  # a title that normalises to nothing
    ],
)
def test_mask_title_cuts_only_a_clean_mention(sentence: str, title: str, expected: str | None) -> None:
    assert mask_title(sentence, title) == expected


def test_mask_title_takes_the_first_clean_mention() -> None:
    s = "Paris Hilton visited Paris twice."
    assert mask_title(s, "Paris") == "Paris Hilton visited twice."


def _toy() -> dict[str, Document]:
    docs = [
        Document("Gently", "Gently is a 1933 film directed by Willi Forst. It starred Marta Eggerth in the lead.",
                 "Gently"),
        Document("Willi Forst", "Willi Forst was an Austrian actor and director.", "Willi Forst"),
        Document("Marta Eggerth", "Marta Eggerth was a Hungarian singer.", "Marta Eggerth"),
        Document("Private", "Private notes about Willi Forst and Marta Eggerth.", "Private", scope="alice"),
    ]
    return {d.id: d for d in docs}


def test_bridge_examples_on_a_toy_corpus() -> None:
    corpus = _toy()
    graph = LinkGraph.build(corpus.values(), min_common=100)
    got = {ex.positive_ids: ex for ex in bridge_examples(corpus, graph, limit=100)}
    assert set(got) == {("Gently", "Willi Forst"), ("Gently", "Marta Eggerth")}  # the scoped doc is no A
    ex = got[("Gently", "Willi Forst")]
    assert ex.query == "Gently is a 1933 film directed by ." and ex.context == (ex.query,)
    assert ex.framing == FIRST_HOP and ex.source == BRIDGE_SOURCE and ex.group_id == "bridge:Gently"
    assert got[("Gently", "Marta Eggerth")].query == "It starred in the lead."  # the sentence that mentions B
    # a held-out document is neither A nor B; a scoped B is never a target
    assert [e.positive_ids for e in bridge_examples(corpus, graph, limit=100, exclude={"Willi Forst"})] == [
        ("Gently", "Marta Eggerth")]
    assert bridge_examples(corpus, graph, limit=100, exclude={"Gently"}) == []
    # a masked sentence of fewer than 4 words says too little: no example
    short = dict(corpus, Gently=Document("Gently", "Gently starred Willi Forst.", "Gently"))
    assert bridge_examples(short, LinkGraph.build(short.values(), min_common=100), limit=100) == []
    with pytest.raises(ValueError, match="limit"):
        bridge_examples(corpus, graph, limit=-1)


def test_a_private_document_is_never_the_bridge_target() -> None:
    # an unscoped paragraph that names the private one: it links there, but that link is no training pair
    diary = Document("Diary", "Diary is a 1950 film about the Private archive of a studio in Vienna.", "Diary")
    corpus = dict(_toy(), Diary=diary)
    graph = LinkGraph.build(corpus.values(), min_common=100)
    assert "Private" in graph.links["Diary"]
    pairs = {ex.positive_ids for ex in bridge_examples(corpus, graph, limit=100)}
    assert pairs == {("Gently", "Willi Forst"), ("Gently", "Marta Eggerth")}
    public = dict(corpus, Private=Document("Private", corpus["Private"].text, "Private"))  # the same, unscoped
    graph = LinkGraph.build(public.values(), min_common=100)
    assert ("Diary", "Private") in {ex.positive_ids for ex in bridge_examples(public, graph, limit=100)}


def test_bridge_examples_on_real_hotpotqa_paragraphs() -> None:
    docs = hotpot_sample().docs
    corpus = {d.id: d for d in docs}
    graph = LinkGraph.build(docs)
    everything = bridge_examples(corpus, graph, limit=10**6)
    assert len(everything) >= 20
    for ex in everything:
        a, b = ex.positive_ids
        assert b in graph.links[a]  # every pair is a link of the graph
        assert any(mask_title(s, corpus[b].title) == ex.query for s in split_sentences(corpus[a].text))
    assert len({ex.id for ex in everything}) == len(everything)
    held = {everything[0].positive_ids[1]}
    assert all(held.isdisjoint(ex.positive_ids) for ex in bridge_examples(corpus, graph, limit=10**6, exclude=held))
    # a limit samples, and the same seed samples the same examples
    sampled = bridge_examples(corpus, graph, limit=10, seed=3)
    assert len(sampled) == 10 and sampled == bridge_examples(corpus, graph, limit=10, seed=3)
    assert {ex.id for ex in sampled} != {ex.id for ex in bridge_examples(corpus, graph, limit=10, seed=4)}


def test_the_benchmark_never_mines_eval_gold_or_eval_only_documents() -> None:
    corpus = _toy()
    corpus["Eggerth Song"] = Document("Eggerth Song", "A song sung by Marta Eggerth in the film.", "Eggerth Song")
    graph = LinkGraph.build(corpus.values(), min_common=100)
    held = Example("q", ("who directed it?",), "who directed it?", ("Willi Forst",), framing=FIRST_HOP)
    suite = BenchSuite(train=[], eval={FIRST_HOP: [held]}, corpus=corpus, eval_only_docs=frozenset({"Eggerth Song"}))
    got = suite_bridge_examples(suite, graph, limit=100, seed=0)
    assert [ex.positive_ids for ex in got] == [("Gently", "Marta Eggerth")]
    with pytest.raises(PrimeError, match="bridge_pairs"):
        Recipe(bridge_pairs=-1)
