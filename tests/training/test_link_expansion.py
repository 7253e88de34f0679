"""Link expansion: the retriever (online, through Qdrant) and training (offline, numpy) give the predictor
the same context, on real MiniLM embeddings of real HotpotQA paragraphs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from prime_retriever.backends.inference import EagerPredictor
from prime_retriever.errors import RetrieverError
from prime_retriever.model.random_predictor import random_predictor
from prime_retriever.retrieval.link_graph import LinkExpansion, LinkGraph
from prime_retriever.retrieval.retriever import PredictiveRetriever
from prime_retriever.stores.base import StoreUnavailableError
from prime_retriever.stores.retry import RetryPolicy
from tests.prime_retriever.retrieval.test_retriever import (
    cached_encoder,
    embedding_cache_dir,
    hotpot_sample,
    populated_store,
)
from training.data.examples import FIRST_HOP, MULTI_HOP, Example
from training.link_expansion import expand_training_set
from training.training_set import build_training_sets

CAP = 4


class RecordingBackend(EagerPredictor):
    """The real eager predictor, recording the (context, mask) of every forward."""

    def __init__(self) -> None:
        super().__init__(random_predictor(384, perturb=0.003, max_context_length=CAP + 3,
                                          link_candidates=CAP, link_seeds=1))
        self.seen: list[tuple[np.ndarray, np.ndarray | None]] = []

    def predict(self, context: np.ndarray, query: np.ndarray, context_mask: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
        self.seen.append((np.array(context), None if context_mask is None else np.array(context_mask)))
        return super().predict(context, query, context_mask)


@pytest.fixture
def cache_root(pytestconfig: pytest.Config) -> Path:
    return embedding_cache_dir(pytestconfig)


def _examples() -> list[Example]:
    s = hotpot_sample()
    by_id = {d.id: d for d in s.docs}
    out: list[Example] = []
    for i, (q, gold) in enumerate(zip(s.questions[:12], s.gold[:12], strict=True)):
        out.append(Example(f"f{i}", (q,), q, tuple(gold), framing=FIRST_HOP))
        if len(gold) == 2:
            out.append(Example(f"m{i}", (q, by_id[gold[0]].text), q, (gold[1],), framing=MULTI_HOP,
                               exclude_ids=(gold[0],)))
    return out


async def test_retriever_and_training_build_the_same_expanded_context(cache_root: Path) -> None:
    sample = hotpot_sample()
    graph = LinkGraph.build(sample.docs)
    expansion = LinkExpansion(graph, seeds=1, max_candidates=CAP)
    examples = _examples()
    encoder = cached_encoder(cache_root)
    corpus = {d.id: d for d in sample.docs}
    tset, _, _ = build_training_sets(examples, [], corpus, encoder, max_context_length=3)
    expanded = expand_training_set(tset, examples, expansion, mined_negatives=5)

    backend = RecordingBackend()
    store = await populated_store(cache_root)
    n_expanded = 0
    async with PredictiveRetriever(backend, encoder, store, micro_batching=False, expansion=expansion) as r:
        for i, ex in enumerate(examples):
            backend.seen.clear()
            hits = await r.search(list(ex.context), ex.query, k=5, exclude_ids=list(ex.exclude_ids))
            assert hits.source == "predicted" and not set(hits.doc_ids) & set(ex.exclude_ids)
            (ctx, mask), = backend.seen
            n = int(expanded.context_mask[i].sum())
            assert ctx.shape[1] == n and (mask is None or mask.all())
            np.testing.assert_allclose(ctx[0], expanded.context[i, :n].numpy(), atol=1e-5)
            n_expanded += n > len(ex.context)
            # the conversation turns come last, unchanged
            np.testing.assert_allclose(ctx[0, n - len(ex.context):], tset.context[i, : len(ex.context)].numpy(),
                                       atol=1e-6)
            # hard negatives: never a gold
            negs = set(expanded.negatives[i][expanded.negatives[i] >= 0].tolist())
            assert not negs & set(tset.gold[i][tset.gold[i] >= 0].tolist()) and negs
    assert n_expanded >= len(examples) // 3  # the sample's questions and paragraphs do mention titles


async def test_a_scoped_search_sees_only_its_scope_online_and_in_training(cache_root: Path) -> None:
    """Split the corpus into two scopes (two users' memories): a scoped search must neither return nor
    hand the predictor a document of the other scope, and training must build the same context."""
    from prime_retriever.stores.qdrant import QdrantStore
    from prime_retriever.text.documents import Document, scope_filter

    sample = hotpot_sample()
    scope_of = {d.id: f"user{i % 2}" for i, d in enumerate(sample.docs)}
    docs = [Document(d.id, d.text, d.title, scope=scope_of[d.id]) for d in sample.docs]
    corpus = {d.id: d for d in docs}
    graph = LinkGraph.build(docs)
    expansion = LinkExpansion(graph, seeds=1, max_candidates=CAP)
    examples = [Example(ex.id, ex.context, ex.query, ex.positive_ids, framing=ex.framing, exclude_ids=ex.exclude_ids,
                        scope=scope_of[ex.positive_ids[0]]) for ex in _examples()]
    encoder = cached_encoder(cache_root)
    tset, _, _ = build_training_sets(examples, [], corpus, encoder, max_context_length=3)
    expanded = expand_training_set(tset, examples, expansion, mined_negatives=5,
                                   scopes=[corpus[i].scope for i in tset.corpus_ids])
    unscoped = expand_training_set(tset, [Example(e.id, e.context, e.query, e.positive_ids, exclude_ids=e.exclude_ids)
                                          for e in examples], expansion, mined_negatives=5)
    vectors = tset.corpus.numpy()  # C × D

    store = QdrantStore("scoped", location=":memory:")
    await store.ensure_collection(encoder.dim, encoder.name)
    await store.upsert([d.id for d in docs], vectors[[tset.corpus_ids.index(d.id) for d in docs]],
                       [d.payload() for d in docs])
    backend = RecordingBackend()
    dropped = 0
    async with PredictiveRetriever(backend, encoder, store, micro_batching=False, expansion=expansion) as r:
        for i, ex in enumerate(examples):
            backend.seen.clear()
            hits = await r.search(list(ex.context), ex.query, k=5, filter=scope_filter(ex.scope),
                                  exclude_ids=list(ex.exclude_ids))
            assert hits.doc_ids and all(scope_of[h] == ex.scope for h in hits.doc_ids)
            base = await r.search_baseline(ex.query, k=5, filter=scope_filter(ex.scope))
            assert all(scope_of[h] == ex.scope for h in base.doc_ids)
            (ctx, _), = backend.seen
            n = int(expanded.context_mask[i].sum())
            assert ctx.shape[1] == n
            np.testing.assert_allclose(ctx[0], expanded.context[i, :n].numpy(), atol=1e-5)
            for row in ctx[0, : n - len(ex.context)]:  # the linked documents: all in the example's scope
                nearest = int(np.argmax(vectors @ row))
                assert scope_of[tset.corpus_ids[nearest]] == ex.scope
            negs = expanded.negatives[i][expanded.negatives[i] >= 0].tolist()
            assert all(scope_of[tset.corpus_ids[j]] == ex.scope for j in negs)
            dropped += int(unscoped.context_mask[i].sum()) - n
    assert dropped > 0  # without scopes, some of these contexts would carry the other user's documents


async def test_expansion_store_failure_is_a_retriever_error(cache_root: Path) -> None:
    sample = hotpot_sample()
    store = await populated_store(cache_root)

    async def unavailable(ids: object) -> dict[str, np.ndarray]:
        raise StoreUnavailableError("retrieve: connection refused")

    store.get_vectors = unavailable  # type: ignore[method-assign]
    expansion = LinkExpansion(LinkGraph.build(sample.docs), max_candidates=CAP)
    retry = RetryPolicy(attempts=2, base_delay_s=0.001, timeout_s=1.0)
    async with PredictiveRetriever(RecordingBackend(), cached_encoder(cache_root), store, retry=retry,
                                   expansion=expansion) as r:
        q = sample.questions[0]
        with pytest.raises(RetrieverError, match="retrieve"):
            await r.search([q], q, k=3)
        # the store recovers: the same retriever serves again
        del store.get_vectors
        assert len(await asyncio.wait_for(r.search([q], q, k=3), 30)) == 3


def test_expansion_must_leave_room_for_the_conversation(cache_root: Path) -> None:
    sample = hotpot_sample()
    with pytest.raises(ValueError, match="max_candidates"):
        PredictiveRetriever(RecordingBackend(), cached_encoder(cache_root), object(),  # type: ignore[arg-type]
                            expansion=LinkExpansion(LinkGraph.build(sample.docs), max_candidates=CAP + 3))


def test_trainer_refuses_an_expansion_the_config_does_not_record(cache_root: Path, tmp_path: Path) -> None:
    from prime_retriever.errors import PrimeError
    from prime_retriever.model.config import PredictorConfig
    from training.trainer import TrainOptions, train_predictor
    from training.training_config import TrainingConfig

    sample = hotpot_sample()
    corpus = {d.id: d for d in sample.docs}
    expansion = LinkExpansion(LinkGraph.build(sample.docs), seeds=1, max_candidates=CAP)
    linked = PredictorConfig(input_dim=384, output_dim=384, hidden_dim=32, num_heads=2, num_layers=1,
                             max_context_length=8, link_candidates=CAP)
    plain = PredictorConfig(input_dim=384, output_dim=384, hidden_dim=32, num_heads=2, num_layers=1,
                             max_context_length=8)
    for cfg, exp in ((linked, None), (plain, expansion), (linked.model_copy(update={"link_seeds": 2}), expansion)):
        with pytest.raises(PrimeError, match="must agree"):
            train_predictor(_examples(), [], corpus, cached_encoder(cache_root), cfg, TrainingConfig(),
                            tmp_path / "ckpt", TrainOptions(expansion=exp))
