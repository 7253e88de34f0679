"""LinkGraph and LinkExpansion: title-mention links, candidates, persistence, selection."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from prime_retriever.retrieval.link_graph import LinkExpansion, LinkGraph, LinkGraphError, normalize_title
from prime_retriever.text.documents import Document
from tests.prime_retriever.retrieval.test_retriever import hotpot_sample

DOCS = [
    Document("mj", "Michael Jackson was an English writer on beer and whisky.", "Michael Jackson (writer)"),
    Document("ls", "Lucy Saunders wrote essays for Michael Jackson; she lives in Milwaukee.", "Lucy Saunders"),
    Document("mil", "Milwaukee is a city in Wisconsin.", "Milwaukee"),
    Document("ab", "Ab is a short title that Milwaukee texts mention: ab ab.", "Ab"),
    Document("1999", "A year. Milwaukee.", "1999"),
    Document("wi", "Wisconsin is a state; its largest city is Milwaukee.", "Wisconsin"),
]


def test_normalize_title_drops_qualifiers_and_case() -> None:
    assert normalize_title("Michael Jackson (writer)") == "michael jackson"
    assert normalize_title("  Milwaukee ") == "milwaukee"


def test_build_links_mentioned_titles_only() -> None:
    g = LinkGraph.build(DOCS)
    assert g.links["ls"] == ("mj", "mil")  # order of first mention
    assert g.links["mil"] == ("wi",)
    assert g.links["wi"] == ("mil",)  # its own title is not a link
    # short ("Ab") and digit-only ("1999") titles are never link targets
    assert all("ab" not in v and "1999" not in v for v in g.links.values())
    assert "mj" not in g.links  # a document that mentions no title has no entry
    assert g.num_links == sum(len(v) for v in g.links.values()) and len(g) == len(g.links)


def test_build_drops_generic_documents() -> None:
    many = [Document(f"t{i}", f"text {i}", f"Topic number{i}") for i in range(5)]
    hub = Document("hub", " ".join(f"Topic number{i}" for i in range(5)), "Hub")
    assert LinkGraph.build([*many, hub], max_links=5).links["hub"] == tuple(f"t{i}" for i in range(5))
    assert "hub" not in LinkGraph.build([*many, hub], max_links=4).links


def test_build_ignores_titles_shared_by_many_documents() -> None:
    # LoCoMo-style: every turn's title is its speaker; a name on 9 documents is no entity to link to,
    # and must not cost a Wikipedia paragraph that mentions it its real links.
    turns = [Document(f"c:D1:{i}", f"turn {i}", "John") for i in range(9)]
    para = Document("p", "John Lennon was born in Milwaukee.", "John Lennon")
    g = LinkGraph.build([*DOCS, *turns, para], max_links=8)
    assert g.links["p"] == ("mil",)
    assert g.mentions("What did John say?") == []
    few = LinkGraph.build([*DOCS, *turns[:2], para], max_links=8)
    assert few.links["p"] == ("c:D1:0", "c:D1:1", "mil")  # two namesakes are still linked


def test_build_ignores_titles_that_are_common_words() -> None:
    # a song called "Time" is no hop for 21 documents that say "time"; Milwaukee (3 mentions) still is
    song = Document("song", "Time is a song by a band.", "Time (song)")
    talk = [Document(f"t{i}", f"It takes time to visit {'Milwaukee' if i < 3 else 'home'}.", f"T{i}")
            for i in range(21)]
    g = LinkGraph.build([*DOCS, song, *talk], min_common=20)
    assert g.mentions("What time is it in Milwaukee?") == ["mil"]
    assert g.links["t0"] == ("mil",) and "t5" not in g.links
    kept = LinkGraph.build([*DOCS, song, *talk], min_common=22)  # 22 mention it (the song too): at the cap
    assert kept.mentions("What time is it?") == ["song"]
    # the share of the corpus counts too: 22 of 29 documents is under 80%
    assert LinkGraph.build([*DOCS, song, *talk], min_common=1, max_title_share=0.8).mentions("time") == ["song"]

def test_candidates_mentions_then_links_without_excluded() -> None:
    g = LinkGraph.build(DOCS)
    assert g.mentions("Did Lucy Saunders visit Wisconsin?") == ["ls", "wi"]
    assert g.candidates(["Did Lucy Saunders visit Wisconsin?"], ["ls"], exclude=["wi"]) == ["ls", "mj", "mil"]
    assert g.candidates([], ["nothing-known"]) == []


def test_real_hotpotqa_links_point_at_mentioned_titles() -> None:
    docs = hotpot_sample().docs
    g = LinkGraph.build(docs)
    by_id = {d.id: d for d in docs}
    assert g.num_links > 20
    for a, targets in g.links.items():
        assert a not in targets and 0 < len(targets) <= g.max_links
        words = " ".join(by_id[a].text.lower().split())
        for b in targets:
            assert normalize_title(by_id[b].title).split()[0] in words


def test_save_load_roundtrip_and_errors(tmp_path: Path) -> None:
    g = LinkGraph.build(DOCS)
    path = g.save(tmp_path / "links.json")
    h = LinkGraph.load(path)
    assert h.links == g.links and h.titles == g.titles
    assert h.candidates(["Lucy Saunders"], ["mil"]) == g.candidates(["Lucy Saunders"], ["mil"])
    with pytest.raises(LinkGraphError, match="no link graph"):
        LinkGraph.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(LinkGraphError, match="unreadable"):
        LinkGraph.load(tmp_path / "bad.json")
    data = json.loads(path.read_text())
    (tmp_path / "v9.json").write_text(json.dumps({**data, "format_version": 9}))
    with pytest.raises(LinkGraphError, match="format version 9"):
        LinkGraph.load(tmp_path / "v9.json")
    (tmp_path / "broken.json").write_text(json.dumps({**data, "links": [1, 2]}))
    with pytest.raises(LinkGraphError, match="malformed"):
        LinkGraph.load(tmp_path / "broken.json")


def test_expansion_select_orders_best_last_and_caps() -> None:
    g = LinkGraph.build(DOCS)
    q = np.array([1.0, 0.0, 0.0], np.float32)
    vecs = {
        "a": np.array([0.9, 0.1, 0.0], np.float32),
        "b": np.array([0.1, 0.9, 0.0], np.float32),
        "c": np.array([0.5, 0.5, 0.0], np.float32),
    }
    assert LinkExpansion(g, max_candidates=5).select(q, ["a", "b", "c", "no-vector"], vecs) == ["b", "c", "a"]
    assert LinkExpansion(g, max_candidates=2).select(q, ["a", "b", "c"], vecs) == ["c", "a"]
    assert LinkExpansion(g).select(q, [], vecs) == []
    with pytest.raises(ValueError, match="max_candidates"):
        LinkExpansion(g, max_candidates=0)
    with pytest.raises(ValueError, match="seeds"):
        LinkExpansion(g, seeds=-1)


def test_config_leaves_room_for_the_conversation() -> None:
    from pydantic import ValidationError

    from prime_retriever.model.config import PredictorConfig

    assert PredictorConfig(max_context_length=20, link_candidates=12).link_candidates == 12
    with pytest.raises(ValidationError, match="link_candidates"):
        PredictorConfig(max_context_length=12, link_candidates=12)


async def test_from_config_builds_the_expansion_the_predictor_was_trained_with(tmp_path: Path) -> None:
    from prime_retriever.backends.inference import EagerPredictor
    from prime_retriever.model.random_predictor import random_predictor
    from prime_retriever.retrieval.retriever import PredictiveRetriever
    from tests.prime_retriever.retrieval.test_retriever import shared_encoder

    path = LinkGraph.build(DOCS).save(tmp_path / "links.json")
    linked = EagerPredictor(random_predictor(384, max_context_length=8, link_candidates=5, link_seeds=2))
    r = PredictiveRetriever.from_config(backend=linked, encoder=shared_encoder(), links=path)
    assert r.expansion is not None and (r.expansion.max_candidates, r.expansion.seeds) == (5, 2)
    assert r.expansion.graph.links == LinkGraph.build(DOCS).links
    with pytest.warns(UserWarning, match="no link graph"):
        r2 = PredictiveRetriever.from_config(backend=linked, encoder=shared_encoder())
    assert r2.expansion is None
    plain = EagerPredictor(random_predictor(384))
    with pytest.warns(UserWarning, match="not trained with link expansion"):
        r3 = PredictiveRetriever.from_config(backend=plain, encoder=shared_encoder(), links=path)
    assert r3.expansion is None
    for x in (r, r2, r3):
        await x.close()


def test_links_cli_builds_and_saves(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from prime_retriever.cli.main import main

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(json.dumps({"id": d.id, "text": d.text, "title": d.title}) for d in DOCS))
    assert main(["links", str(corpus), "--out", str(tmp_path / "g.json")]) == 0
    assert LinkGraph.load(tmp_path / "g.json").links == LinkGraph.build(DOCS).links
    assert "6 documents" in capsys.readouterr().out
    assert main(["links", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "h.json")]) == 1
