"""Link expansion of a :class:`~training.training_set.TrainingSet`, exactly as the retriever does it online.

For every example (shapes: E examples, C corpus rows, D dims):

1. seeds: the ``expansion.seeds`` corpus rows nearest to the query embedding, the example's excluded
   rows left out (exact cosine search: what the retriever's store returns);
2. candidates: :meth:`LinkGraph.candidates` of the example's texts (context turns and query) and
   the seeds' ids, minus the excluded ids;
3. :meth:`LinkExpansion.select`: at most ``max_candidates`` of them, best last; their corpus
   vectors are prepended to the example's context turns.

The non-gold candidates and the ``mined_negatives`` highest-ranked non-gold rows of the query
replace the example's hard negatives: they are what the predictor has to learn to tell apart.

An example with a ``scope`` sees only its scope's rows (seeds, candidates and mined negatives), as a
search restricted with :func:`~prime_retriever.scope_filter` does online.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from prime_retriever.retrieval.link_graph import LinkExpansion
from training.data.examples import Example
from training.training_set import TrainingSet, pad_rows

__all__ = ["expand_training_set"]


def expand_training_set(
    tset: TrainingSet,
    examples: Sequence[Example],
    expansion: LinkExpansion,
    *,
    mined_negatives: int = 16,
    scopes: Sequence[str] | None = None,
    chunk: int = 512,
) -> TrainingSet:
    """A copy of ``tset`` whose contexts start with each example's selected linked documents.

    ``examples[i]`` must be the example of row ``i`` (the texts come from it). ``scopes[r]`` is the
    scope of corpus row ``r`` (:attr:`Document.scope`; needed when an example has a scope).
    """
    if len(examples) != len(tset):
        raise ValueError(f"{len(examples)} examples for a training set of {len(tset)}")
    corpus = tset.corpus.numpy()  # C × D
    row_of = {d: r for r, d in enumerate(tset.corpus_ids)}
    scoped = any(ex.scope for ex in examples)
    if scoped and (scopes is None or len(scopes) != corpus.shape[0]):
        raise ValueError("examples with a scope need the scope of every corpus row (scopes=)")
    scope_of = np.asarray(scopes if scopes is not None else [""] * corpus.shape[0])  # C (read only when scoped)
    E, D = len(tset), corpus.shape[1]
    picked: list[list[int]] = []
    negatives: list[list[int]] = []
    depth = max(expansion.seeds, mined_negatives) + int((tset.gold >= 0).sum(1).max()) + 1
    depth = min(depth, corpus.shape[0])
    for start in range(0, E, chunk):
        q = tset.query[start : start + chunk].numpy()  # b × D
        sims = q @ corpus.T  # b × C
        excl = tset.excluded[start : start + chunk]
        rows, cols = torch.nonzero(excl >= 0, as_tuple=True)
        sims[rows.numpy(), excl[rows, cols].numpy()] = -np.inf
        for b in range(q.shape[0]):
            if examples[start + b].scope:
                sims[b, scope_of != examples[start + b].scope] = -np.inf  # outside the example's scope
        top = np.argpartition(-sims, depth - 1, axis=1)[:, :depth]
        for b in range(q.shape[0]):
            i = start + b
            order = top[b][np.argsort(-sims[b, top[b]], kind="stable")]
            order = [int(r) for r in order if np.isfinite(sims[b, r])]
            ex = examples[i]
            gold = set(tset.gold[i][tset.gold[i] >= 0].tolist())
            seeds = [tset.corpus_ids[r] for r in order[: expansion.seeds]]
            cands = expansion.graph.candidates(ex.turns, seeds, exclude=ex.exclude_ids)
            if ex.scope:
                cands = [c for c in cands if c in row_of and scope_of[row_of[c]] == ex.scope]
            vecs = {c: corpus[row_of[c]] for c in cands if c in row_of}
            chosen = [row_of[c] for c in expansion.select(q[b], cands, vecs)]
            picked.append(chosen)
            mined = [r for r in order if r not in gold][:mined_negatives]
            negatives.append(list(dict.fromkeys([*(r for r in chosen if r not in gold), *mined])))
    n_turns = tset.context_mask.sum(1)  # E
    N = int(max(len(p) + int(n) for p, n in zip(picked, n_turns.tolist(), strict=True)))
    context = torch.zeros(E, N, D, dtype=tset.context.dtype)  # E × N × D
    mask = torch.zeros(E, N, dtype=torch.bool)  # E × N
    corpus_t = tset.corpus
    for i, (p, n) in enumerate(zip(picked, n_turns.tolist(), strict=True)):
        c = len(p)
        if c:
            context[i, :c] = corpus_t[torch.tensor(p, dtype=torch.long)]
        context[i, c : c + n] = tset.context[i, :n]
        mask[i, : c + n] = True
    return TrainingSet(context, mask, tset.query, tset.gold, pad_rows(negatives), tset.excluded, tset.corpus,
                       tset.corpus_ids, tset.stratum)
