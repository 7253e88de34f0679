"""The Lightning module: schedule, metrics, loss assembly, confidence head, Y-Encoder fine-tuning."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from prime_retriever.model.checkpoint import read_meta
from prime_retriever.model.config import PredictorConfig
from training.module import PredictorModule, TrainableYEncoder, retrieval_metrics, warmup_cosine
from training.training_config import TrainingConfig
from training.training_set import TrainingSet, collate_training_batch

D = 8


def _config(**kw: object) -> PredictorConfig:
    return PredictorConfig(input_dim=D, output_dim=D, hidden_dim=16, num_heads=2, num_layers=1,
                           use_torch_compile=False, **kw)


def _tset(n: int = 6, c: int = 10) -> TrainingSet:
    g = torch.Generator().manual_seed(0)
    corpus = torch.nn.functional.normalize(torch.randn(c, D, generator=g), dim=-1)
    return TrainingSet(
        context=torch.randn(n, 2, D, generator=g), context_mask=torch.tensor([[True, True]] * n),
        query=torch.nn.functional.normalize(torch.randn(n, D, generator=g), dim=-1),
        gold=torch.tensor([[i % c, (i + 1) % c] for i in range(n)]),
        negatives=torch.tensor([[(i + 3) % c] for i in range(n)]),
        excluded=torch.full((n, 1), -1), corpus=corpus, corpus_ids=[f"d{i}" for i in range(c)])


def test_warmup_then_cosine() -> None:
    assert warmup_cosine(0, 10, 110) == pytest.approx(0.1)
    assert warmup_cosine(9, 10, 110) == pytest.approx(1.0)
    assert warmup_cosine(10, 10, 110) == pytest.approx(1.0)
    assert warmup_cosine(60, 10, 110) == pytest.approx(0.5)
    assert warmup_cosine(110, 10, 110) == pytest.approx(0.0, abs=1e-12)


def test_optimiser_decays_only_matrices_and_follows_the_schedule() -> None:
    tc = TrainingConfig(learning_rate=1e-3, weight_decay=0.05, warmup_steps=50, y_encoder_lr_multiplier=0.0)
    module = PredictorModule(_config(), tc, total_steps=1000)
    cfg = module.configure_optimizers()
    opt, sched = cfg["optimizer"], cfg["lr_scheduler"]["scheduler"]
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(module.model.parameters()))
    assert module.warmup_steps == 50
    for step in range(120):
        assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 * warmup_cosine(step, 50, 1000))
        opt.step()
        sched.step()
    # a warmup as long as the run is capped at a tenth of it
    assert PredictorModule(_config(), tc, total_steps=60).warmup_steps == 6


def test_retrieval_metrics_by_hand() -> None:
    corpus = torch.eye(4)
    pred = torch.tensor([[0.9, 0.5, 0.1, 0.0], [0.0, 0.0, 0.2, 1.0]])
    gold = torch.tensor([[1, 2], [0, -1]])
    rec, rr = retrieval_metrics(pred, corpus, gold, k=2)
    # row 0 ranks: d0 1st, d1 2nd, d2 3rd → golds d1 (rank 2, in top 2), d2 (rank 3) → recall 0.5, rr 1/2
    # row 1: d3, d2, then d0/d1 tie at 0: a tie counts against the gold → d0 rank 4 → recall 0, rr 1/4
    assert rec.tolist() == pytest.approx([0.5, 0.0])
    assert rr.tolist() == pytest.approx([0.5, 1 / 4])
    # excluding d0 for row 0 moves its golds up one place
    rec, rr = retrieval_metrics(pred, corpus, gold, torch.tensor([[0], [-1]]), k=2)
    assert rec.tolist() == pytest.approx([1.0, 0.0])
    assert rr.tolist() == pytest.approx([1.0, 1 / 4])


@pytest.mark.parametrize("bad", [float("nan"), 0.0])
def test_a_diverged_or_collapsed_prediction_ranks_last(bad: float) -> None:
    # NaN scores lose every comparison and a constant vector ties every document: neither may look perfect
    corpus = torch.eye(4)
    pred = torch.full((2, 4), bad)
    rec, rr = retrieval_metrics(pred, corpus, torch.tensor([[1], [2]]), k=2)
    assert rec.tolist() == [0.0, 0.0] and rr.tolist() == pytest.approx([1 / 4, 1 / 4])
    with torch.autocast("cpu", dtype=torch.bfloat16):  # scores stay fp32 under autocast: no bf16 ties
        close = torch.tensor([[1.0, 0.999, 0.0, 0.0]])
        _, rr = retrieval_metrics(close, torch.eye(4), torch.tensor([[1]]), k=2)
    assert rr.tolist() == pytest.approx([1 / 2])


def test_a_listed_hard_negative_that_is_the_rows_gold_is_not_used() -> None:
    # pushing a prediction away from its own gold document would fight the positive term
    tset = _tset()
    tset.negatives = torch.tensor([[i % 10, (i + 1) % 10, (i + 3) % 10] for i in range(6)])  # 2 of 3 are gold
    for seed in range(5):
        batch = collate_training_batch(tset, range(6), num_hard_negatives=3,
                                       generator=torch.Generator().manual_seed(seed))
        rows, valid = batch["hard_negative_rows"], batch["hard_negative_mask"]
        assert valid.sum(dim=1).tolist() == [1] * 6
        assert rows[valid].tolist() == [(i + 3) % 10 for i in range(6)]


def test_loss_assembly_and_confidence_target() -> None:
    torch.manual_seed(0)
    tset = _tset()
    module = PredictorModule(_config(residual=True), TrainingConfig(batch_size=4, warmup_steps=0,
                             y_encoder_lr_multiplier=0.0, gradient_checkpointing=True), total_steps=10)
    assert module.model.gradient_checkpointing
    batch = collate_training_batch(tset, [0, 1, 2, 3], num_hard_negatives=1)
    parts = module.compute_loss(batch)
    assert module.last_num_candidates == 4
    # the confidence head starts at logit 0: BCE = log 2 whatever the target
    assert parts["confidence_bce"].item() == pytest.approx(math.log(2), abs=1e-6)
    assert parts["loss"].item() == pytest.approx(parts["infonce"].item() + 0.1 * math.log(2), abs=1e-5)
    parts["loss"].backward()  # type: ignore[no-untyped-call]
    head = module.model.confidence_head.weight.grad
    trunk = module.model.query_proj.weight.grad
    assert trunk is not None and float(trunk.abs().sum()) == 0.0  # residual: output_proj starts at zero
    assert module.model.output_proj.weight.grad is not None
    assert float(module.model.output_proj.weight.grad.abs().sum()) > 0
    assert head is not None  # the head is trained, on a detached state


def test_the_loss_is_infonce_with_its_masks_and_negatives_plus_the_confidence_bce() -> None:
    """compute_loss hands InfoNCE the batch's hard negatives and false-negative ids, and trains the
    confidence head toward "the positive is the top-1" (checked against the loss computed here)."""
    from training.losses import InfoNCELoss

    torch.manual_seed(0)
    tset = _tset()  # row i's golds: d{i}, d{i+1}; so neighbouring rows share golds
    module = PredictorModule(_config(residual=False, dropout=0.0),
                             TrainingConfig(batch_size=6, warmup_steps=0, y_encoder_lr_multiplier=0.0),
                             total_steps=10)
    with torch.no_grad():
        module.model.confidence_head.bias.fill_(1.5)  # a head at logit 0 gives log 2 for any target
    batch = collate_training_batch(tset, range(6), num_hard_negatives=1, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        parts = module.compute_loss(batch)
        out = module.model.predict(batch["context"], batch["query"], batch["context_mask"])
        loss_fn = InfoNCELoss(0.07)
        hard, hmask = batch["hard_negatives"], batch["hard_negative_mask"]
        logits, labels = loss_fn.logits(out.embedding, batch["target"], hard, hmask,
                                        positive_ids=batch["positive_row"], gold_ids=batch["gold"])
        # the batch must exercise both: some column is another row's copy of one of this row's golds,
        # and some hard negative is real
        unmasked, _ = loss_fn.logits(out.embedding, batch["target"], hard, hmask)
        assert bool(torch.isneginf(logits).any()) and not bool(torch.isneginf(unmasked[:, :6]).any())
        assert bool(hmask.any())
        nce = torch.nn.functional.cross_entropy(logits, labels)
        top1 = (logits.argmax(dim=1) == labels).float()
        assert 0.0 < float(top1.mean()) < 1.0  # both targets occur, so an inverted one changes the BCE
        bce = torch.nn.functional.binary_cross_entropy_with_logits(out.confidence_logit, top1)
    assert module.loss_fn.temperature == 0.07
    assert parts["infonce"].item() == pytest.approx(nce.item(), abs=1e-5)
    assert parts["confidence_bce"].item() == pytest.approx(bce.item(), abs=1e-5)
    assert parts["loss"].item() == pytest.approx(nce.item() + 0.1 * bce.item(), abs=1e-5)
    assert parts["top1"].item() == pytest.approx(float(top1.mean()))


def test_sampled_positive_is_a_gold_and_hard_negatives_are_real() -> None:
    tset = _tset()
    for seed in range(5):
        batch = collate_training_batch(tset, [0, 1, 2], num_hard_negatives=2,
                                       generator=torch.Generator().manual_seed(seed))
        for i in range(3):
            assert int(batch["positive_row"][i]) in tset.gold[i].tolist()
        assert batch["hard_negative_mask"].sum(dim=1).tolist() == [1, 1, 1]
        assert torch.equal(batch["target"], tset.corpus[batch["positive_row"]])


def test_the_positive_is_drawn_uniformly_among_a_rows_golds() -> None:
    tset = _tset()  # every row has two golds
    picks = torch.stack([collate_training_batch(tset, range(6), generator=torch.Generator().manual_seed(s))
                         ["positive_row"] for s in range(200)])  # 200 × 6
    first = (picks == tset.gold[:, 0]).float()  # 200 × 6
    assert bool(((picks == tset.gold[:, 0]) | (picks == tset.gold[:, 1])).all())
    assert 0.4 < float(first.mean()) < 0.6  # 1,200 draws: each gold about half the time
    assert bool((first.mean(dim=0) > 0.3).all() and (first.mean(dim=0) < 0.7).all())


def test_query_only_rows_see_the_query_alone() -> None:
    tset = _tset(n=6)
    rows = list(range(6))
    plain = collate_training_batch(tset, rows, generator=torch.Generator().manual_seed(0))
    assert torch.equal(plain["context"], tset.context) and bool(plain["context_mask"].all())
    every = collate_training_batch(tset, rows, query_only=1.0, generator=torch.Generator().manual_seed(0))
    assert every["context_mask"].tolist() == [[True, False]] * 6
    assert torch.equal(every["context"][:, 0], tset.query) and float(every["context"][:, 1].abs().sum()) == 0.0
    assert torch.equal(tset.context_mask, torch.ones(6, 2, dtype=torch.bool))  # the set itself is untouched
    some = collate_training_batch(tset, rows * 50, query_only=0.3, generator=torch.Generator().manual_seed(1))
    alone = ~some["context_mask"][:, 1]  # 300 rows
    assert 0.2 < float(alone.float().mean()) < 0.4
    assert torch.equal(some["context"][alone, 0], some["query"][alone])
    assert torch.equal(some["context"][~alone], tset.context[torch.tensor(rows * 50)][~alone])
    with pytest.raises(ValueError, match="query_only"):
        collate_training_batch(tset, rows, query_only=1.5)


def test_y_encoder_fine_tuning_saves_with_the_checkpoint(tmp_path: Path) -> None:
    from prime_retriever.text.encoders import default_encoder_path
    from training.callbacks import BestCheckpoint

    y = TrainableYEncoder(default_encoder_path(), max_length=32)
    dim = y.model.config.hidden_size
    cfg = PredictorConfig(input_dim=dim, output_dim=dim, hidden_dim=32, num_heads=2, num_layers=1,
                          use_torch_compile=False)
    texts = ["Paris is the capital of France.", "The Nile is a river.", "Mount Everest is high.", "Cats purr."]
    module = PredictorModule(cfg, TrainingConfig(batch_size=2, warmup_steps=0, y_encoder_lr_multiplier=0.1,
                                                 gradient_checkpointing=False),
                             total_steps=5, y_encoder=y, corpus_texts=texts)
    groups = module.configure_optimizers()["optimizer"].param_groups
    assert groups[-1]["lr"] == pytest.approx(1e-4 * 0.1)
    batch = {"context": torch.randn(2, 1, dim), "context_mask": torch.ones(2, 1, dtype=torch.bool),
             "query": torch.randn(2, dim), "positive_row": torch.tensor([0, 2]),
             "target": torch.zeros(2, dim), "gold": torch.tensor([[0], [2]])}
    module.compute_loss(batch)["loss"].backward()  # type: ignore[no-untyped-call]
    grads = [p.grad for p in y.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)

    class _T:
        global_step = 3

    BestCheckpoint(tmp_path / "ck", encoder=None).save(_T(), module, {"val_mrr": 0.5})  # type: ignore[arg-type]
    meta = read_meta(tmp_path / "ck")
    assert meta.needs_reindex and meta.y_encoder_dir == "y_encoder"
    assert (tmp_path / "ck" / "y_encoder" / "config.json").is_file()


def test_stratified_mean_is_a_macro_average() -> None:
    import torch

    from training.data import Example
    from training.training_set import strata, stratified_mean

    values = torch.tensor([1.0, 1.0, 1.0, 0.0])
    stratum = torch.tensor([0, 0, 0, 1])
    assert stratified_mean(values, stratum) == 0.5  # (mean 1.0 + mean 0.0) / 2, not 0.75
    assert stratified_mean(values, None) == 0.75
    exs = [Example(id=str(i), context=("q",), query="q", positive_ids=("d",), source=src, framing=fr)
           for i, (src, fr) in enumerate([("b", "given"), ("a", "first_hop"), ("b", "given"), ("a", "multi_hop")])]
    assert strata(exs).tolist() == [2, 0, 2, 1]
