"""Contrastive losses of the predictor: InfoNCE with in-batch negatives, and ProjNCE.

Shapes: B rows (predictions) in the batch, C candidate targets (``C = B`` on one process, the
targets of every rank under DDP), K explicit hard negatives per row, G gold ids per row, D dim.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["InfoNCELoss", "ProjNCELoss", "false_negative_mask"]


def false_negative_mask(
    positive_ids: torch.Tensor,  # C long: the doc id of every candidate (column)
    gold_ids: torch.Tensor | None,  # B × G long, -1 padded: every row's gold doc ids
    row_ids: torch.Tensor,  # B long: the doc id of every row's own positive
    labels: torch.Tensor,  # B long: the column of every row's own positive
) -> torch.Tensor:
    """Bool ``B × C``: True where candidate ``j`` is a false negative of row ``i``.

    A candidate is a false negative of row ``i`` when it is not row ``i``'s own positive column but
    its doc id is row ``i``'s positive id, or (with ``gold_ids``) one of row ``i``'s gold ids.
    """
    B, C = row_ids.shape[0], positive_ids.shape[0]
    same = positive_ids[None, :] == row_ids[:, None]  # B × C
    if gold_ids is not None:
        valid = gold_ids >= 0  # B × G
        in_gold = (positive_ids[None, None, :] == gold_ids[:, :, None]) & valid[:, :, None]  # B × G × C
        same = same | in_gold.any(dim=1)  # B × C
    own = torch.zeros(B, C, dtype=torch.bool, device=row_ids.device)
    own[torch.arange(B, device=row_ids.device), labels] = True
    return same & ~own


class InfoNCELoss(nn.Module):
    r"""InfoNCE (multiple-negatives ranking loss) for a predictor against target embeddings.

    For each row ``i`` with prediction :math:`p_i` and positive target :math:`t_i` (both
    L2-normalised, so the dot product is the cosine similarity), the loss is the cross-entropy of
    picking :math:`t_i` among all candidates:

    .. math::

        \mathcal{L} = \frac{1}{B}\sum_{i=1}^{B} -\log
        \frac{\exp(p_i^\top t_i / \tau)}
             {\sum_{j \in \mathcal{C}_i} \exp(p_i^\top t_j / \tau)
              + \sum_{k=1}^{K} m_{ik} \exp(p_i^\top n_{ik} / \tau)}

    where :math:`\mathcal{C}_i` are the in-batch candidates (every row's positive target, i.e. the
    other rows' positives are row ``i``'s negatives) minus the false negatives of row ``i``, and
    :math:`n_{ik}` the optional explicit hard negatives of row ``i`` with validity mask
    :math:`m_{ik}`.

    False-negative masking: when ``positive_ids`` (the doc id of each candidate) is given, a
    candidate whose doc id equals row ``i``'s own positive id (two rows sharing a positive), or,
    with ``gold_ids``, is any of row ``i``'s gold documents, is removed from row ``i``'s
    denominator (its own positive column always stays). Hard negatives that equal one of row
    ``i``'s golds should be filtered by the caller (``hard_negative_mask``).

    Args:
        temperature: :math:`\tau`, the softmax temperature (0.07 by default).

    Inputs of :meth:`forward`:
        predicted: ``B × D`` unit predictions.
        targets: ``C × D`` unit candidate targets, ``C >= B``; by default row ``i``'s positive is
            ``targets[i]`` (pass ``labels`` otherwise, e.g. under DDP ``rank * B + i``).
        hard_negatives: optional ``B × K × D`` explicit negatives per row.
        hard_negative_mask: optional ``B × K`` bool, True = a real negative (padding is False).
        positive_ids: optional ``C`` long, the doc id of each candidate target.
        gold_ids: optional ``B × G`` long, -1 padded, each row's whole gold set (needs ``positive_ids``).
        labels: optional ``B`` long, the column of each row's positive in ``targets``.

    Returns:
        The scalar mean loss. :meth:`logits` returns the masked ``B × (C + K)`` logits as well.

    Example::

        loss_fn = InfoNCELoss(temperature=0.07)
        loss = loss_fn(pred, target)  # B × D each
    """

    def __init__(self, temperature: float = 0.07) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0; got {temperature}")
        self.temperature = temperature

    def logits(
        self,
        predicted: torch.Tensor,  # B × D
        targets: torch.Tensor,  # C × D
        hard_negatives: torch.Tensor | None = None,  # B × K × D
        hard_negative_mask: torch.Tensor | None = None,  # B × K bool
        positive_ids: torch.Tensor | None = None,  # C long
        gold_ids: torch.Tensor | None = None,  # B × G long, -1 padded
        labels: torch.Tensor | None = None,  # B long
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(logits B × (C+K), labels B)``; masked entries are ``-inf``."""
        B, C = predicted.shape[0], targets.shape[0]
        if C < B and labels is None:
            raise ValueError(f"targets must have at least B={B} rows when labels are not given; got {C}")
        if labels is None:
            labels = torch.arange(B, device=predicted.device)
        if gold_ids is not None and positive_ids is None:
            raise ValueError("gold_ids needs positive_ids (the doc id of every candidate)")
        sim = predicted @ targets.T / self.temperature  # B × C
        if positive_ids is not None:
            if positive_ids.shape != (C,):
                raise ValueError(f"positive_ids must have shape ({C},); got {tuple(positive_ids.shape)}")
            row_ids = positive_ids[labels]  # B
            sim = sim.masked_fill(false_negative_mask(positive_ids, gold_ids, row_ids, labels), float("-inf"))
        if hard_negatives is not None:
            if hard_negatives.dim() != 3 or hard_negatives.shape[0] != B:
                raise ValueError(f"hard_negatives must have shape ({B}, K, D); got {tuple(hard_negatives.shape)}")
            hard = torch.einsum("bd,bkd->bk", predicted, hard_negatives) / self.temperature  # B × K
            if hard_negative_mask is not None:
                hard = hard.masked_fill(~hard_negative_mask, float("-inf"))
            sim = torch.cat([sim, hard], dim=1)  # B × (C+K)
        return sim, labels

    def forward(
        self,
        predicted: torch.Tensor,  # B × D
        targets: torch.Tensor,  # C × D
        hard_negatives: torch.Tensor | None = None,  # B × K × D
        hard_negative_mask: torch.Tensor | None = None,  # B × K bool
        positive_ids: torch.Tensor | None = None,  # C long
        gold_ids: torch.Tensor | None = None,  # B × G long
        labels: torch.Tensor | None = None,  # B long
    ) -> torch.Tensor:
        sim, lab = self.logits(predicted, targets, hard_negatives, hard_negative_mask, positive_ids, gold_ids, labels)
        return F.cross_entropy(sim.float(), lab)


class ProjNCELoss(nn.Module):
    r"""ProjNCE: InfoNCE with separate positive / negative projections plus an adjustment term.

    Reference: Minoh Jeong and Alfred Hero, "Generalizing Supervised Contrastive learning: A
    Projection Perspective", arXiv:2506.09810 (2025).

    The paper scores a sample's embedding :math:`f(x_i)` against a *positive projection*
    :math:`g_+(c_i)` of its own label in the numerator and against *negative projections*
    :math:`g_-(c_j)` of the batch's labels in the denominator, and adds an adjustment term
    :math:`R(X, C)` on negative pairs so that the objective stays a valid (multi-sample,
    NWJ-type) lower bound on :math:`I(X; C)`. With :math:`\psi(u, v) = u^\top v / \tau`,
    :math:`a_i = \frac{1}{N}\sum_{j=1}^{N} e^{\psi(f(x_i), g_-(c_j))}`, this implementation
    computes the negated bound

    .. math::

        \mathcal{L} = -\Big[\,1 + \frac{1}{N}\sum_{i}\big(\psi(f(x_i), g_+(c_i)) - \log a_i\big)
        - \frac{1}{N}\sum_i \frac{1}{N-1}\sum_{k \neq i} \frac{e^{\psi(f(x_i), g_+(c_k))}}{a_i}\Big]

    The first two terms are the projected InfoNCE term (equal to :math:`\log N - \text{InfoNCE}`
    when :math:`g_+ = g_-`); the last is the adjustment term evaluated on the batch's
    independent (negative) pairs :math:`k \neq i`. It pulls :math:`g_-(c_k)` towards
    :math:`f(x_i)` and pushes :math:`g_+(c_k)` away, as the paper describes.

    CAVEAT: the paper's exact equation for :math:`R(X, C)` could not be read offline (only its
    abstract, reviews and summaries were reachable); the adjustment term above is the one that
    follows from the multi-sample NWJ bound the paper builds on, with the paper's notation.
    The paper's β-weighted variant is not implemented.

    In this project :math:`f(x_i)` is the predictor's output, :math:`g_+(c_i)` the positive
    document's Y-Encoder embedding and :math:`g_-(c_j)` defaults to :math:`g_+(c_j)`.

    Inputs of :meth:`forward`: ``predicted`` ``B × D``, ``positive_projections`` ``B × D``
    (:math:`g_+(c_i)`), optional ``negative_projections`` ``B × D`` (:math:`g_-(c_j)`). Returns
    the scalar loss.
    """

    def __init__(self, temperature: float = 0.07) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0; got {temperature}")
        self.temperature = temperature

    def forward(
        self,
        predicted: torch.Tensor,  # B × D, f(x_i)
        positive_projections: torch.Tensor,  # B × D, g_+(c_i)
        negative_projections: torch.Tensor | None = None,  # B × D, g_-(c_j)
    ) -> torch.Tensor:
        N = predicted.shape[0]
        if N < 2:
            raise ValueError("ProjNCE needs at least 2 rows (the adjustment term uses the other rows)")
        neg = positive_projections if negative_projections is None else negative_projections
        pos_all = (predicted @ positive_projections.T).float() / self.temperature  # N × N: ψ(f_i, g+_k)
        neg_all = (predicted @ neg.T).float() / self.temperature  # N × N: ψ(f_i, g-_j)
        log_a = torch.logsumexp(neg_all, dim=1) - math.log(N)  # N
        nce = pos_all.diagonal() - log_a  # N
        off = ~torch.eye(N, dtype=torch.bool, device=predicted.device)  # N × N
        ratio = torch.exp(pos_all - log_a[:, None])  # N × N
        adjustment = (ratio * off).sum(dim=1) / (N - 1)  # N
        bound = 1.0 + nce.mean() - adjustment.mean()
        return -bound
