"""The benchmark's suite (train/eval sides, unseen datasets) and its per-dataset breakdown."""

from __future__ import annotations

from pathlib import Path

import pytest

from prime_retriever.errors import DataError
from training.bench.runner import MethodRun, _by_dataset, goal_lines
from training.bench.suite import shipped_suite
from training.data import data_dir
from training.data.examples import GIVEN, Example

DATA = data_dir()


@pytest.mark.skipif(not (DATA / "locomo").is_dir(), reason="shared data not available")
def test_shipped_suite_evaluates_locomo_without_ever_training_on_it() -> None:
    suite = shipped_suite(DATA, limit=30)
    assert suite.unseen == ["locomo"]
    assert suite.sources["locomo"] == {"train": 0, "eval": 30}
    locomo = [ex for ex in suite.eval[GIVEN] if suite.eval_dataset[ex.id] == "locomo"]
    assert len(locomo) == 30 and all(ex.id.startswith("locomo:") for ex in locomo)
    assert not any(ex.id.startswith("locomo:") for ex in suite.train)
    # every eval item is attributed to the dataset it came from
    assert {suite.eval_dataset[ex.id] for exs in suite.eval.values() for ex in exs} == {
        "hotpotqa", "musique", "doc2dial", "locomo"}
    # training never sees the unseen dataset's documents, not even as negatives; the store does
    conversations = {ex.id.split(":")[1] for ex in locomo}
    turns = {i for i in suite.corpus if i.split(":", 1)[0] in conversations and ":D" in i}
    assert turns and turns <= suite.eval_only_docs
    assert not turns & set(suite.train_corpus)
    assert len(suite.train_corpus) == len(suite.corpus) - len(suite.eval_only_docs)
    # a limited run still searches each question's whole conversation, not just its evidence turns
    evidence = {p for ex in locomo for p in ex.positive_ids}
    assert len(turns) > 5 * len(evidence)


@pytest.mark.skipif(not (DATA / "locomo").is_dir(), reason="shared data not available")
def test_shipped_suite_without_unseen_data_trains_on_every_dataset() -> None:
    suite = shipped_suite(DATA, limit=30, unseen=None)
    assert suite.unseen == [] and "locomo" not in suite.sources and not suite.eval_only_docs


@pytest.mark.skipif(not (DATA / "locomo").is_dir(), reason="shared data not available")
def test_shipped_suite_with_musique_unseen_trains_on_locomo_split_by_conversation() -> None:
    suite = shipped_suite(DATA, limit=10, unseen="musique")
    assert suite.unseen == ["musique"]
    assert suite.sources["musique"]["train"] == 0 and suite.sources["musique"]["eval"] > 0
    assert not any(ex.source.startswith("musique") for ex in suite.train)
    musique_docs = {p for exs in suite.eval.values() for ex in exs if suite.eval_dataset[ex.id] == "musique"
                    for p in ex.positive_ids}
    assert musique_docs and musique_docs <= suite.eval_only_docs
    # LoCoMo is on both sides, but no conversation is: an eval question searches a memory never trained on
    train_convs = {ex.scope for ex in suite.train if ex.id.startswith("locomo:")}
    eval_convs = {ex.scope for exs in suite.eval.values() for ex in exs if ex.id.startswith("locomo:")}
    assert train_convs and eval_convs and not train_convs & eval_convs
    assert len(train_convs | eval_convs) == 10  # limit=10 counts conversations here, all ten of them


@pytest.mark.skipif(not (DATA / "locomo").is_dir(), reason="shared data not available")
def test_bench_cli_passes_the_unseen_choice_to_the_shipped_suite() -> None:
    from prime_retriever.cli.main import build_parser
    from training.bench import _suite

    parser = build_parser(load=["bench"])
    for choice, unseen in (("musique", ["musique"]), ("none", [])):
        args = parser.parse_args(["bench", "--preset", "shipped", "--unseen", choice, "--limit", "10", "--out", "x"])
        assert _suite(args).unseen == unseen
    assert parser.parse_args(["bench", "--preset", "shipped", "--out", "x"]).unseen == "locomo"


def test_shipped_suite_refuses_an_unknown_unseen_dataset() -> None:
    with pytest.raises(DataError, match="unseen must be one of"):
        shipped_suite(DATA, unseen="hotpotqa")


@pytest.mark.skipif(not (DATA / "nq_open").is_dir(), reason="shared data not available")
def test_shipped_suite_trains_on_nq_open_and_never_evaluates_it() -> None:
    suite = shipped_suite(DATA, limit=30)
    assert suite.sources["nq_open"] == {"train": 30, "eval": 0}
    nq = [ex for ex in suite.train if ex.id.startswith("nq:")]
    assert len(nq) == 30
    assert not any(ex.id.startswith("nq:") for exs in suite.eval.values() for ex in exs)
    # its gold passages are in the corpus the training reads, and nothing else moved to the eval side
    assert {p for ex in nq for p in ex.positive_ids} <= set(suite.train_corpus)
    without = shipped_suite(DATA, limit=30, nq_open=False)
    assert "nq_open" not in without.sources
    assert {k: [ex.id for ex in v] for k, v in without.eval.items()} == {
        k: [ex.id for ex in v] for k, v in suite.eval.items()}


def _ex(i: int) -> Example:
    return Example(id=f"e{i}", context=("c",), query="q", positive_ids=(f"d{i}",), framing=GIVEN)


def test_by_dataset_splits_every_method_and_checks_goals_per_dataset() -> None:
    examples = [_ex(i) for i in range(6)]
    gold = [set(ex.positive_ids) for ex in examples]
    dataset_of = {f"e{i}": ("seen" if i < 3 else "unseen") for i in range(6)}
    # the predictor ranks the gold first on "seen" and second on "unseen"; the baselines always second
    first = [[f"d{i}", "x"] for i in range(6)]
    second = [["x", f"d{i}"] for i in range(6)]
    pred = [first[i] if i < 3 else second[i] for i in range(6)]
    runs = {
        "predictor": MethodRun(pred, [1.0] * 6, [0.5] * 6),
        "query_baseline": MethodRun(second, [1.0] * 6),
        "linear_adapter": MethodRun(second, [1.0] * 6),
    }
    parts = _by_dataset(runs, examples, gold, dataset_of)
    assert set(parts) == {"seen", "unseen"}
    assert parts["seen"]["predictor"]["mrr"] == 1.0 and parts["unseen"]["predictor"]["mrr"] == 0.5
    assert parts["seen"]["predictor"]["gains"]["mrr_x_query"] == pytest.approx(2.0)
    assert parts["unseen"]["predictor"]["n"] == 3
    lines = goal_lines({f"given/{k}": v for k, v in parts.items()})
    assert any("[PASS] given/seen: MRR" in ln for ln in lines)
    assert any("[FAIL] given/unseen: MRR" in ln for ln in lines)
    # one dataset: no breakdown
    assert _by_dataset(runs, examples, gold, dict.fromkeys(dataset_of, "only")) == {}


def test_unseen_lists_datasets_evaluated_but_never_trained() -> None:
    from training.bench.suite import BenchSuite

    s = BenchSuite(train=[], eval={}, corpus={}, sources={"a": {"train": 3, "eval": 2}, "b": {"train": 0, "eval": 5},
                                                         "c": {"train": 4, "eval": 0}})
    assert s.unseen == ["b"]


async def test_bench_searches_a_scoped_question_within_its_scope_for_every_method(pytestconfig: pytest.Config) -> None:
    """LoCoMo-style scopes on real HotpotQA paragraphs: the benchmark's searches (predictor, query,
    adapter, concatenation) rank only the question's own scope."""
    from prime_retriever.backends.inference import EagerPredictor
    from prime_retriever.model.random_predictor import random_predictor
    from prime_retriever.retrieval.retriever import PredictiveRetriever
    from prime_retriever.stores.qdrant import QdrantStore
    from prime_retriever.text.documents import Document
    from tests.prime_retriever.retrieval.test_retriever import cached_encoder, embedding_cache_dir, hotpot_sample
    from training.bench.adapter import LinearAdapter
    from training.bench.runner import _concat_text, _evaluate_framing, _text_vectors

    sample = hotpot_sample()
    scope_of = {d.id: f"conv{i % 3}" for i, d in enumerate(sample.docs)}
    docs = [Document(d.id, d.text, d.title, scope=scope_of[d.id]) for d in sample.docs]
    encoder = cached_encoder(embedding_cache_dir(pytestconfig))
    examples = [Example(f"e{i}", (q,), q, (g[0],), scope=scope_of[g[0]])
                for i, (q, g) in enumerate(zip(sample.questions[:10], sample.gold[:10], strict=True))]
    store = QdrantStore("scoped", location=":memory:")
    await store.ensure_collection(encoder.dim, encoder.name)
    await store.upsert([d.id for d in docs], encoder.encode([d.encoding_text for d in docs], show_progress=False),
                       [d.payload() for d in docs])
    vec = _text_vectors(encoder, [t for ex in examples for t in (ex.query, _concat_text(ex))])
    backend = EagerPredictor(random_predictor(encoder.dim, perturb=0.003, max_context_length=4))
    async with PredictiveRetriever(backend, encoder, store, micro_batching=False) as r:
        runs = await _evaluate_framing(r, examples, GIVEN, vec, LinearAdapter(encoder.dim))
    assert set(runs) == {"query_baseline", "linear_adapter", "predictor", "concat_baseline"}
    for name, run in runs.items():
        assert len(run.ranked) == len(examples)
        for ex, ranked in zip(examples, run.ranked, strict=True):
            assert ranked, name
            assert {scope_of[d] for d in ranked} == {ex.scope}, name
            # the whole scope is ranked (k = 100 > its size), and nothing else
            assert len(ranked) == sum(s == ex.scope for s in scope_of.values()), name


def test_files_suite_reads_generic_examples_against_the_corpus_files_given(tmp_path: Path) -> None:
    """Issue 30: the README's ``bench --train e_train.jsonl --eval e_eval.jsonl --corpus docs.jsonl`` with no
    ``corpus.jsonl`` beside the examples (it failed: "generic examples need a corpus file")."""
    import json

    from training.bench.suite import files_suite

    data, elsewhere = tmp_path / "examples", tmp_path / "docs"
    data.mkdir()
    elsewhere.mkdir()
    docs = elsewhere / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": f"d{i}", "text": f"document {i}"}) + "\n" for i in range(4)))
    for name, rng in (("e_train.jsonl", range(0, 3)), ("e_eval.jsonl", range(3, 4))):
        (data / name).write_text("".join(json.dumps(
            {"id": f"q{i}", "context": [f"turn {i}"], "query": f"question {i}", "positive_ids": [f"d{i}"]}
        ) + "\n" for i in rng))
    suite = files_suite([data / "e_train.jsonl"], [data / "e_eval.jsonl"], [docs])
    assert [ex.id for ex in suite.train] == ["q0", "q1", "q2"]
    assert [ex.id for ex in suite.eval["given"]] == ["q3"]
    assert sorted(suite.corpus) == ["d0", "d1", "d2", "d3"]
