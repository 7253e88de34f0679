"""Hand-checked tests of training.losses."""

from __future__ import annotations

import math

import pytest
import torch

from training.losses import InfoNCELoss, ProjNCELoss, false_negative_mask

E = math.e


def _eye(n: int = 3) -> torch.Tensor:
    return torch.eye(n)


def test_infonce_loss_computation() -> None:
    # predictions e1, e2, e3; targets e1, e3, e2 (rows 1 and 2 point at each other's target)
    pred = _eye()
    target = torch.tensor([[1.0, 0, 0], [0, 0, 1], [0, 1, 0]])
    # τ = 0.5: logits = 2 · sim. row 0: [2, 0, 0] → -log(e²/(e²+2)); rows 1, 2: positive 0, one
    # other candidate at 2 → -log(1/(e²+2)). Mean = log(e² + 2) - 2/3.
    expected = math.log(E**2 + 2) - 2 / 3
    loss = InfoNCELoss(temperature=0.5)(pred, target)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert loss.item() == pytest.approx(1.5728, abs=1e-4)


def test_infonce_default_temperature_and_perfect_prediction() -> None:
    loss_fn = InfoNCELoss()
    assert loss_fn.temperature == 0.07
    # perfect, orthogonal predictions: each row's loss is -log(e^{1/τ}/(e^{1/τ} + 2))
    expected = math.log(1 + 2 * math.exp(-1 / 0.07))
    assert loss_fn(_eye(), _eye()).item() == pytest.approx(expected, abs=1e-5)


def test_shared_positive_is_masked_out_of_negatives() -> None:
    pred = _eye()
    target = torch.tensor([[1.0, 0, 0], [1, 0, 0], [0, 0, 1]])  # rows 0 and 1 share doc 5
    ids = torch.tensor([5, 5, 7])
    # τ = 1. row 0: sims [1, 1(masked), 0] → log(e+1) - 1; row 1: sims [0 (masked), 0, 0] → log 2;
    # row 2: sims [0, 0, 1] → log(e+2) - 1
    expected = (math.log(E + 1) - 1 + math.log(2) + math.log(E + 2) - 1) / 3
    loss = InfoNCELoss(temperature=1.0)(pred, target, positive_ids=ids)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    unmasked = InfoNCELoss(temperature=1.0)(pred, target)
    assert unmasked.item() > loss.item()


def test_gold_set_masks_other_rows_positive_that_is_my_gold() -> None:
    pred = _eye()
    target = _eye()
    ids = torch.tensor([5, 6, 9])
    gold = torch.tensor([[5, 9], [6, -1], [9, -1]])  # doc 9 (row 2's positive) is also a gold of row 0
    mask = false_negative_mask(ids, gold, ids, torch.arange(3))
    assert mask.tolist() == [[False, False, True], [False, False, False], [False, False, False]]
    # τ = 1: row 0 sims [1, 0, 0(masked)] → log(e+1) - 1; rows 1, 2 unchanged: log(e+2) - 1
    expected = (math.log(E + 1) - 1 + 2 * (math.log(E + 2) - 1)) / 3
    loss = InfoNCELoss(temperature=1.0)(pred, target, positive_ids=ids, gold_ids=gold)
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_gold_ids_need_positive_ids() -> None:
    with pytest.raises(ValueError, match="positive_ids"):
        InfoNCELoss()(_eye(), _eye(), gold_ids=torch.tensor([[0], [1], [2]]))


def test_hard_negatives_with_validity_mask() -> None:
    pred = _eye(3)[:2]  # e1, e2
    target = _eye(3)[:2]  # e1, e2
    hard = torch.stack([torch.stack([_eye()[0], _eye()[2]]), torch.stack([_eye()[1], _eye()[0]])])  # 2 × 2 × 3
    valid = torch.tensor([[True, False], [False, True]])
    # τ = 1. row 0: in-batch [1, 0], hard [1 (valid), 0 (pad)] → log(2e + 1) - 1
    # row 1: in-batch [0, 1], hard [1 (pad), 0 (valid)] → log(e + 2) - 1
    expected = (math.log(2 * E + 1) - 1 + math.log(E + 2) - 1) / 2
    loss = InfoNCELoss(temperature=1.0)(pred, target, hard_negatives=hard, hard_negative_mask=valid)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    # without the mask every hard negative counts
    full = InfoNCELoss(temperature=1.0)(pred, target, hard_negatives=hard)
    assert full.item() == pytest.approx((math.log(2 * E + 2) - 1 + math.log(2 * E + 2) - 1) / 2, abs=1e-6)


def test_hard_negative_shape_is_checked() -> None:
    with pytest.raises(ValueError, match="hard_negatives"):
        InfoNCELoss()(_eye(), _eye(), hard_negatives=torch.zeros(2, 1, 3))


def test_labels_select_columns_of_a_larger_candidate_set() -> None:
    pred = _eye()[:2]
    targets = torch.cat([torch.zeros(2, 3), _eye()[:2]])  # 4 candidates, positives at columns 2, 3
    loss = InfoNCELoss(temperature=1.0)(pred, targets, labels=torch.tensor([2, 3]))
    # each row: candidates [0, 0, 1, 0] → log(e + 3) - 1
    assert loss.item() == pytest.approx(math.log(E + 3) - 1, abs=1e-6)


def test_infonce_gradient_flows_to_both_sides() -> None:
    pred = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1).requires_grad_()
    target = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1).requires_grad_()
    InfoNCELoss()(pred, target).backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert target.grad is not None and target.grad.abs().sum() > 0


def test_projnce_hand_computation_identity_projections() -> None:
    f = _eye(2)
    g = _eye(2)
    # τ = 1, s± = I. Projected InfoNCE: -log(e/(e+1)) per row. a_i = (e+1)/2;
    # R = e^0 / a_i - 1 = 2/(e+1) - 1 (the one k ≠ i per row).
    expected = (math.log(E + 1) - 1) + (2 / (E + 1) - 1)
    loss = ProjNCELoss(temperature=1.0)(f, g)
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_projnce_hand_computation_distinct_projections() -> None:
    # f = (e1, e2); g+(c_1) = g+(c_2) = e1; g-(c_1) = g-(c_2) = e2; τ = 1.
    # s+ = [[1, 1], [0, 0]], s- = [[0, 0], [1, 1]].
    # Projected InfoNCE: row 1 -log(e/2), row 2 -log(1/(2e)) → mean log 2.
    # a_1 = 1, a_2 = e; R = mean(e^{s+_12}/a_1, e^{s+_21}/a_2) - 1 = (e + 1/e)/2 - 1.
    f = _eye(2)
    gp = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    gm = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    nce, adj = ProjNCELoss(temperature=1.0).terms(f, gp, gm)
    assert nce.item() == pytest.approx(math.log(2), abs=1e-6)
    assert adj.item() == pytest.approx(math.cosh(1) - 1, abs=1e-6)
    assert ProjNCELoss(temperature=1.0)(f, gp, gm).item() == pytest.approx(math.log(2) + math.cosh(1) - 1, abs=1e-6)


def test_projnce_hand_computation_separate_projections() -> None:
    torch.manual_seed(0)
    N, D, tau = 3, 4, 0.5
    f = torch.nn.functional.normalize(torch.randn(N, D), dim=-1)
    gp = torch.nn.functional.normalize(torch.randn(N, D), dim=-1)
    gm = torch.nn.functional.normalize(torch.randn(N, D), dim=-1)
    total_nce = 0.0
    total_adj = 0.0
    for i in range(N):
        denominator = sum(math.exp(float(f[i] @ gm[j]) / tau) for j in range(N))
        total_nce += -(float(f[i] @ gp[i]) / tau - math.log(denominator))
        a = denominator / N
        total_adj += sum(math.exp(float(f[i] @ gp[k]) / tau) / a for k in range(N) if k != i) / (N - 1)
    expected = total_nce / N + (total_adj / N - 1)
    loss = ProjNCELoss(temperature=tau)(f, gp, gm)
    assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_projnce_with_equal_projections_is_infonce_plus_adjustment() -> None:
    # g+ = g- = the target embeddings: the projected term is exactly InfoNCE, and the adjustment
    # is N/(N-1)·(1 - mean_i p_ii) - 1 with p the InfoNCE softmax (Σ_{k≠i} e^{s_ik}/a_i = N(1 - p_ii)).
    torch.manual_seed(1)
    N, D, tau = 5, 8, 0.2
    f = torch.nn.functional.normalize(torch.randn(N, D), dim=-1)
    g = torch.nn.functional.normalize(f + 0.3 * torch.randn(N, D), dim=-1)
    loss_fn = ProjNCELoss(temperature=tau)
    nce, adj = loss_fn.terms(f, g)
    info = InfoNCELoss(temperature=tau)(f, g)
    assert nce.item() == pytest.approx(info.item(), abs=1e-5)
    p_diag = torch.softmax(f @ g.T / tau, dim=1).diagonal()
    assert adj.item() == pytest.approx(N / (N - 1) * (1 - p_diag.mean().item()) - 1, abs=1e-5)
    assert loss_fn(f, g, g).item() == pytest.approx(info.item() + adj.item(), abs=1e-5)


def test_projnce_adjustment_vanishes_in_expectation_when_projections_agree() -> None:
    # With g+ = g- and f independent of the labels, E[e^{s_ik}/a_i] = 1 by exchangeability, so
    # E[R] = 0 and ProjNCE reduces to InfoNCE in expectation.
    gen = torch.Generator().manual_seed(2)
    batches, N, D = 4000, 4, 3
    f = torch.nn.functional.normalize(torch.randn(batches, N, D, generator=gen), dim=-1)
    g = torch.nn.functional.normalize(torch.randn(batches, N, D, generator=gen), dim=-1)
    loss_fn = ProjNCELoss(temperature=0.5)
    adj = torch.stack([loss_fn.terms(f[b], g[b])[1] for b in range(batches)])
    assert abs(adj.mean().item()) < 4 * adj.std().item() / math.sqrt(batches)
    assert abs(adj.mean().item()) < 0.02


def test_projnce_adjustment_pushes_positive_and_pulls_negative_projections() -> None:
    # Minimising R pushes g+(c_k) away from f(x_i) and pulls g-(c_k) towards it (k ≠ i).
    f = _eye(2)
    gp = torch.tensor([[1.0, 0.0], [0.5, 0.5]], requires_grad=True)
    gm = torch.tensor([[0.5, 0.5], [0.0, 1.0]], requires_grad=True)
    _, adj = ProjNCELoss(temperature=1.0).terms(f, gp, gm)
    adj.backward()  # type: ignore[no-untyped-call]
    assert gp.grad is not None and gm.grad is not None
    # row i = 0 (f = e1), k = 1: descending -grad moves g+(c_1) away from e1 ...
    assert float(gp.grad[1] @ f[0]) > 0
    # ... and moves g-(c_1) towards e1 (f(x_0)).
    assert float(gm.grad[1] @ f[0]) < 0


def test_projnce_needs_two_rows() -> None:
    with pytest.raises(ValueError):
        ProjNCELoss()(torch.ones(1, 2), torch.ones(1, 2))


def test_projnce_shape_is_checked() -> None:
    with pytest.raises(ValueError):
        ProjNCELoss()(torch.ones(2, 3), torch.ones(2, 4))


@pytest.mark.parametrize("tau", [0.0, -1.0, math.nan, math.inf])
def test_temperature_must_be_finite_and_positive(tau: float) -> None:
    with pytest.raises(ValueError, match="finite and > 0"):
        InfoNCELoss(temperature=tau)
    with pytest.raises(ValueError, match="finite and > 0"):
        ProjNCELoss(temperature=tau)
