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


def _positive_temperature(temperature: float) -> float:
    """``temperature`` itself; ``ValueError`` unless it is finite and > 0."""
    if not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be finite and > 0; got {temperature}")
    return temperature


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
        self.temperature = _positive_temperature(temperature)

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
    r"""ProjNCE: projected InfoNCE (``g_+`` for positives, ``g_-`` for negatives) plus an adjustment.

    Reference: Minoh Jeong and Alfred Hero, "Generalizing Supervised Contrastive learning: A
    Projection Perspective", arXiv:2506.09810 (v1 11 Jun 2025; v2 HTML
    https://arxiv.org/html/2506.09810v2). The paper's own equations (its eq. (7), the adjustment
    term, and eq. (12), a variant weighted by :math:`\beta`) could NOT be read: only the abstract,
    summaries and the ICLR 2026 reviews of the paper were reachable. What follows is split into
    what those sources state and what is derived here.

    **Confirmed** (source in brackets):

    * critic :math:`\psi(u, v) = u \cdot v` on the normalised encoder output, scaled by the
      temperature :math:`\tau`; the InfoNCE denominator runs over all :math:`j = 1..N`
      [emergentmind.com/topics/projnce, which restates the paper's InfoNCE].
    * two projections :math:`g_+, g_- : \{1..M\} \to \mathbb{R}^{d_z}`; the positive pair is
      scored as :math:`\psi(f(x_i), g_+(c_i))`, the negative pairs as
      :math:`\psi(f(x_i), g_-(c_j))` [emergentmind; ICLR 2026 review 4].
    * an adjustment term :math:`R(X, C)` on negative pairs is added so that ProjNCE is a valid
      lower bound on :math:`I(X; C)`, obtained by decomposing the multi-sample NWJ bound
      (Proposition 2.1); the adjustment does not cancel when :math:`g_+ \ne g_-`, and with
      :math:`g_+ = g_-` ProjNCE generalises (reduces to) InfoNCE. SupCon is the projected
      InfoNCE term with :math:`g_+(c_i)` = class centroid and :math:`g_-(c_j)` = sample
      embeddings, i.e. ProjNCE *without* the adjustment term (the paper's claim; review 4
      disputes that the equivalence is exact) [abstract; emergentmind
      "multi-sample NWJ-type bound"; ICLR reviews 2 and 4].
    * the adjustment pulls :math:`g_-(c_k)` towards :math:`f(x)` and pushes :math:`g_+(c_k)`
      away from it [ICLR review 2]; it is eq. (7) of the paper, and eq. (12) is a variant with a
      weight :math:`\beta` (:math:`\beta = 5, 10` spread the clusters further) [figure 1
      caption, chatpaper.com/paper/149151; ICLR reviews 1 and 4].

    **Derived here** (not read from the paper): the exact form of :math:`R`. Writing
    :math:`s^\pm_{ij} = \psi(f(x_i), g_\pm(c_j)) / \tau` and
    :math:`a_i = \frac{1}{N}\sum_{j=1}^{N} e^{s^-_{ij}}`, the multi-sample NWJ bound of Poole et
    al. (2019, "On Variational Bounds of Mutual Information") with critic
    :math:`s^+` and baseline :math:`a` gives

    .. math::

        I(X; C) \ge \log N - \mathcal{L}, \qquad
        \mathcal{L} = \underbrace{\frac{1}{N}\sum_{i=1}^{N}
            -\log\frac{e^{s^+_{ii}}}{\sum_{j=1}^{N} e^{s^-_{ij}}}}_{\text{projected InfoNCE}}
          + \underbrace{\frac{1}{N}\sum_{i=1}^{N}\frac{1}{N-1}\sum_{k \ne i}
            \frac{e^{s^+_{ik}}}{a_i} - 1}_{R}

    where :math:`R` estimates :math:`\mathbb{E}_{p(x)p(c_{1:N})}[e^{s^+(x, c_1)} / a(x; c_{1:N})] - 1`
    on the batch's pairs :math:`(x_i, c_k), k \ne i` (plug-in: :math:`a_i` still contains the
    dependent :math:`c_i`). If :math:`g_+ = g_-` that expectation is exactly 1 by
    exchangeability, so the population :math:`R` is 0 and :math:`\mathcal{L}` is InfoNCE; the
    batch estimate is not exactly 0 (it equals :math:`\frac{N}{N-1}(1 - \overline{p_{ii}}) - 1`
    with :math:`p` the InfoNCE softmax, which averages to 0 only when :math:`f` is independent of
    the labels). This :math:`R` has the
    push/pull behaviour review 2 describes, but its normalisation (the ``1/(N-1)`` and ``1/N``,
    the ``- 1`` constant, whether the ``j = i`` denominator term uses :math:`g_-`) is unconfirmed,
    and the :math:`\beta`-weighted variant (eq. (12)) is not implemented.

    In this project :math:`f(x_i)` is the predictor's output, :math:`g_+(c_i)` the positive
    document's Y-Encoder embedding and :math:`g_-(c_j)` defaults to :math:`g_+(c_j)`; then the
    projected InfoNCE term equals :class:`InfoNCELoss` on the same batch.

    Inputs of :meth:`forward`: ``predicted`` ``N × D`` (:math:`f(x_i)`),
    ``positive_projections`` ``N × D`` (:math:`g_+(c_i)`), optional ``negative_projections``
    ``N × D`` (:math:`g_-(c_j)`). Returns the scalar :math:`\mathcal{L}`; :meth:`terms` returns
    its two parts.
    """

    def __init__(self, temperature: float = 0.07) -> None:
        super().__init__()
        self.temperature = _positive_temperature(temperature)

    def terms(
        self,
        predicted: torch.Tensor,  # N × D, f(x_i)
        positive_projections: torch.Tensor,  # N × D, g_+(c_i)
        negative_projections: torch.Tensor | None = None,  # N × D, g_-(c_j)
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(projected InfoNCE, R)``, two scalars whose sum is the loss."""
        N = predicted.shape[0]
        if N < 2:
            raise ValueError("ProjNCE needs at least 2 rows (the adjustment term uses the other rows)")
        neg = positive_projections if negative_projections is None else negative_projections
        if positive_projections.shape != predicted.shape or neg.shape != predicted.shape:
            raise ValueError(
                f"projections must have shape {tuple(predicted.shape)}; got "
                f"{tuple(positive_projections.shape)} and {tuple(neg.shape)}"
            )
        s_pos = (predicted @ positive_projections.T).float() / self.temperature  # N × N: s+_ik
        s_neg = (predicted @ neg.T).float() / self.temperature  # N × N: s-_ij
        log_denominator = torch.logsumexp(s_neg, dim=1)  # N: log Σ_j e^{s-_ij}
        projected_nce = (log_denominator - s_pos.diagonal()).mean()  # scalar
        log_a = log_denominator - math.log(N)  # N: log a_i
        off = ~torch.eye(N, dtype=torch.bool, device=predicted.device)  # N × N, k ≠ i
        ratio = torch.exp(s_pos - log_a[:, None]).masked_fill(~off, 0.0)  # N × N: e^{s+_ik} / a_i
        adjustment = ratio.sum(dim=1).mean() / (N - 1) - 1.0  # scalar R
        return projected_nce, adjustment

    def forward(
        self,
        predicted: torch.Tensor,  # N × D, f(x_i)
        positive_projections: torch.Tensor,  # N × D, g_+(c_i)
        negative_projections: torch.Tensor | None = None,  # N × D, g_-(c_j)
    ) -> torch.Tensor:
        projected_nce, adjustment = self.terms(predicted, positive_projections, negative_projections)
        return projected_nce + adjustment
