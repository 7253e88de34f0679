"""Examples + encoded vectors → the tensors the predictor trains and validates on.

:class:`TrainingSet` holds, for E examples, the padded context ``E × N × D`` (the most recent
``max_context_length`` turns), its mask ``E × N``, the query ``E × D``, each example's gold corpus
rows ``E × G`` (-1 padded: the positives to sample from, and the set used for false-negative
masking), its hard-negative rows ``E × K`` and its excluded rows ``E × X`` (both -1 padded), plus
the corpus matrix ``C × D`` (Y-Encoder space) all rows refer to, and optionally each example's
stratum ``E`` (its dataset and framing): validation metrics are then macro-averaged over strata, so
that the largest dataset alone does not decide early stopping.

:func:`collate_training_batch` turns a list of example indices into one training batch, sampling
one positive per row (uniformly among its golds) and up to ``num_hard_negatives`` hard negatives.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from prime_retriever.text.documents import Document
from training.data.encoded import EncodedCorpus, EncodedExamples, TextEncoderLike
from training.data.examples import Example

__all__ = [
    "TrainingSet",
    "build_training_sets",
    "collate_eval_batch",
    "collate_training_batch",
    "index_dataset",
    "pad_rows",
]

Batch = dict[str, torch.Tensor]


def pad_rows(rows: Sequence[Sequence[int]], width: int | None = None) -> torch.Tensor:
    """Ragged row lists → ``len(rows) × width`` long, -1 padded (width at least 1)."""
    w = max([len(r) for r in rows] + [1]) if width is None else width
    out = torch.full((len(rows), w), -1, dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            out[i, : len(r)] = torch.tensor(list(r)[:w], dtype=torch.long)
    return out


def strata(examples: Sequence[Example]) -> torch.Tensor:
    """Each example's stratum: the index of its (source, framing) pair in sorted order, E long."""
    keys = sorted({(ex.source, ex.framing) for ex in examples})
    index = {k: i for i, k in enumerate(keys)}
    return torch.tensor([index[(ex.source, ex.framing)] for ex in examples], dtype=torch.long)


def stratified_mean(values: torch.Tensor, stratum: torch.Tensor | None) -> float:
    """Mean over strata of each stratum's mean (the plain mean when there is one stratum)."""
    if stratum is None or values.numel() == 0:
        return float(values.float().mean()) if values.numel() else float("nan")
    s = stratum.to(values.device)
    sums = torch.zeros(int(s.max()) + 1, device=values.device).index_add_(0, s, values.float())
    counts = torch.bincount(s, minlength=sums.numel()).float()
    return float((sums[counts > 0] / counts[counts > 0]).mean())


@dataclass
class TrainingSet:
    """Tensors of E examples against one corpus; see the module doc for shapes."""

    context: torch.Tensor  # E × N × D float32
    context_mask: torch.Tensor  # E × N bool
    query: torch.Tensor  # E × D float32
    gold: torch.Tensor  # E × G long, -1 padded (corpus rows)
    negatives: torch.Tensor  # E × K long, -1 padded
    excluded: torch.Tensor  # E × X long, -1 padded
    corpus: torch.Tensor  # C × D float32, the Y-Encoder matrix
    corpus_ids: list[str]
    stratum: torch.Tensor | None = None  # E long: index of (source, framing); None = one stratum

    def __len__(self) -> int:
        return int(self.query.shape[0])

    @classmethod
    def from_encoded(cls, encoded: EncodedExamples, *, max_context_length: int, stratify: bool = False) -> TrainingSet:
        """Build from :class:`EncodedExamples` (its corpus is the candidate set)."""
        n = len(encoded)
        batch = encoded.batch(range(n), max_context_length=max_context_length)
        rows = encoded.rows
        return cls(
            context=batch.context,
            context_mask=batch.context_mask,
            query=batch.query,
            gold=pad_rows([r.positives for r in rows]),
            negatives=pad_rows([r.negatives for r in rows]),
            excluded=pad_rows([r.excluded for r in rows]),
            corpus=torch.from_numpy(np.ascontiguousarray(encoded.corpus.vectors)),
            corpus_ids=list(encoded.corpus.ids),
            stratum=strata(encoded.examples) if stratify else None,
        )

    def subset(self, indices: Sequence[int]) -> TrainingSet:
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        return TrainingSet(self.context[idx], self.context_mask[idx], self.query[idx], self.gold[idx],
                           self.negatives[idx], self.excluded[idx], self.corpus, self.corpus_ids,
                           None if self.stratum is None else self.stratum[idx])


class _Indices(TorchDataset[int]):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def index_dataset(tset: TrainingSet) -> TorchDataset[int]:
    """A map-style dataset of example indices (collate with :func:`collate_training_batch`)."""
    return _Indices(len(tset))


def collate_training_batch(
    tset: TrainingSet,
    indices: Sequence[int],
    *,
    num_hard_negatives: int = 0,
    query_only: float = 0.0,
    generator: torch.Generator | None = None,
) -> Batch:
    """One training batch of the examples ``indices`` (B of them).

    Keys: ``context`` B × N × D, ``context_mask`` B × N, ``query`` B × D, ``positive_row`` B (the
    sampled gold's corpus row), ``target`` B × D (its vector), ``gold`` B × G, ``index`` B, and
    with ``num_hard_negatives = K > 0``: ``hard_negative_rows`` B × K (-1 = none), ``hard_negatives``
    B × K × D and ``hard_negative_mask`` B × K.

    ``query_only`` (augmentation): each row, with that probability, gets the query as its only
    context turn, as a question without history or links looks at serving time (no draw at 0).
    """
    if not 0.0 <= query_only <= 1.0:
        raise ValueError(f"query_only must be in [0, 1]; got {query_only}")
    idx = torch.as_tensor(list(indices), dtype=torch.long)  # B
    mask = tset.context_mask[idx]  # B × Nmax
    n = max(int(mask.sum(dim=1).max()), 1)
    context = tset.context[idx, :n]  # B × n × D (a copy: advanced indexing)
    mask = mask[:, :n]  # B × n
    if query_only > 0:
        alone = torch.rand(len(idx), generator=generator) < query_only  # B
        context[alone] = 0.0
        context[alone, 0] = tset.query[idx[alone]]
        mask[alone] = False
        mask[alone, 0] = True
    gold = tset.gold[idx]  # B × G
    counts = (gold >= 0).sum(dim=1)  # B
    pick = (torch.rand(len(idx), generator=generator) * counts).long().clamp(max=counts - 1)  # B
    positive_row = gold[torch.arange(len(idx)), pick]  # B
    batch: Batch = {
        "index": idx,
        "context": context,
        "context_mask": mask,
        "query": tset.query[idx],
        "positive_row": positive_row,
        "target": tset.corpus[positive_row],
        "gold": gold,
    }
    if num_hard_negatives > 0:
        K = num_hard_negatives
        neg = tset.negatives[idx]  # B × Kmax
        rows = torch.full((len(idx), K), -1, dtype=torch.long)
        for b in range(len(idx)):
            # a listed negative that is one of the row's own gold documents would be pushed away from itself
            cand = neg[b][(neg[b] >= 0) & ~torch.isin(neg[b], gold[b])]
            if cand.numel():
                order = torch.randperm(cand.numel(), generator=generator)[:K]
                rows[b, : order.numel()] = cand[order]
        valid = rows >= 0  # B × K
        batch["hard_negative_rows"] = rows
        batch["hard_negative_mask"] = valid
        batch["hard_negatives"] = tset.corpus[rows.clamp(min=0)] * valid[..., None]  # B × K × D
    return batch


def build_training_sets(
    train_examples: Sequence[Example],
    val_examples: Sequence[Example],
    corpus: Mapping[str, Document],
    encoder: TextEncoderLike,
    *,
    max_context_length: int,
    batch_size: int = 64,
    stratify_validation: bool = False,
) -> tuple[TrainingSet, TrainingSet | None, EncodedCorpus]:
    """Encode the corpus and both example lists once; return (train, val or None, encoded corpus)."""
    enc_corpus = EncodedCorpus(corpus, encoder, batch_size=batch_size)
    train = TrainingSet.from_encoded(EncodedExamples(train_examples, encoder, enc_corpus, batch_size=batch_size),
                                     max_context_length=max_context_length)
    val = (
        TrainingSet.from_encoded(EncodedExamples(val_examples, encoder, enc_corpus, batch_size=batch_size),
                                 max_context_length=max_context_length, stratify=stratify_validation)
        if val_examples
        else None
    )
    return train, val, enc_corpus


def collate_eval_batch(tset: TrainingSet, indices: Sequence[int]) -> Batch:
    """One validation batch: ``context`` B × N × D, ``context_mask`` B × N, ``query`` B × D,
    ``gold`` B × G and ``excluded`` B × X (corpus rows, -1 padded), ``index`` B."""
    idx = torch.as_tensor(list(indices), dtype=torch.long)
    mask = tset.context_mask[idx]
    n = max(int(mask.sum(dim=1).max()), 1)
    batch = {"index": idx, "context": tset.context[idx, :n], "context_mask": mask[:, :n],
             "query": tset.query[idx], "gold": tset.gold[idx], "excluded": tset.excluded[idx]}
    if tset.stratum is not None:
        batch["stratum"] = tset.stratum[idx]
    return batch
