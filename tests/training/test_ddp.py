"""Distributed training on 2 CPU processes (gloo): negatives gathered across ranks WITH gradients."""

from __future__ import annotations

import csv
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from prime_retriever.model.config import PredictorConfig
from training.module import PredictorModule
from training.training_config import TrainingConfig

B, D = 4, 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _module() -> PredictorModule:
    torch.manual_seed(0)
    cfg = PredictorConfig(input_dim=D, output_dim=D, hidden_dim=16, num_heads=2, num_layers=1, dropout=0.0,
                          use_torch_compile=False)
    return PredictorModule(cfg, TrainingConfig(batch_size=B, warmup_steps=0, y_encoder_lr_multiplier=0.0,
                                               gradient_checkpointing=False), total_steps=1)


def _batches() -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    out = []
    for r in range(2):
        rows = torch.arange(B) + r * B
        out.append({"context": torch.randn(B, 2, D, generator=g), "context_mask": torch.ones(B, 2, dtype=torch.bool),
                    "query": torch.randn(B, D, generator=g), "positive_row": rows,
                    "target": torch.nn.functional.normalize(torch.randn(B, D, generator=g), dim=-1),
                    "gold": rows[:, None]})
    return out


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        module = _module()
        batch = _batches()[rank]
        batch["target"] = batch["target"].clone().requires_grad_()
        parts = module.compute_loss(batch)
        parts["loss"].backward()  # type: ignore[no-untyped-call]
        grad_t = batch["target"].grad
        grad_w = module.model.output_proj.weight.grad
        torch.save({"candidates": module.last_num_candidates, "target_grad": grad_t, "weight_grad": grad_w,
                    "loss": parts["infonce"]}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_gathered_negatives_and_gradients_match_single_process(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)  # type: ignore[attr-defined, no-untyped-call]
    res = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert [r["candidates"] for r in res] == [2 * B, 2 * B]

    # single process over the concatenated 2B batch: L = (L_0 + L_1) / 2
    module = _module()
    b0, b1 = _batches()
    full = {k: torch.cat([b0[k], b1[k]]) for k in b0}
    full["target"] = full["target"].clone().requires_grad_()
    parts = module.compute_loss(full)
    parts["loss"].backward()  # type: ignore[no-untyped-call]
    assert full["target"].grad is not None
    assert parts["infonce"].item() == pytest.approx((res[0]["loss"] + res[1]["loss"]).item() / 2, abs=1e-5)
    # gradients flow through the gather: rank r's targets get dL_0/dt_r + dL_1/dt_r = 2 dL/dt_r
    for r in range(2):
        assert res[r]["target_grad"] is not None
        assert torch.allclose(res[r]["target_grad"], 2 * full["target"].grad[r * B:(r + 1) * B], atol=1e-5)
    # DDP averages parameter gradients: (g_0 + g_1) / 2 equals the single-process gradient
    grad_w = module.model.output_proj.weight.grad
    assert grad_w is not None
    assert torch.allclose((res[0]["weight_grad"] + res[1]["weight_grad"]) / 2, grad_w, atol=1e-5)


@pytest.mark.slow
def test_lightning_ddp_spawn_trains(tmp_path: Path) -> None:
    """A few steps of train_predictor under Lightning's ddp_spawn strategy on 2 CPU processes."""
    from prime_retriever.model.checkpoint import load_checkpoint
    from tests.training.test_trainer import ToyEncoder, toy_data
    from training.trainer import TrainOptions, train_predictor

    train, val, corpus = toy_data()
    cfg = PredictorConfig(input_dim=16, output_dim=16, hidden_dim=32, num_heads=2, num_layers=1,
                          use_torch_compile=False)
    tc = TrainingConfig(batch_size=8, warmup_steps=0, num_epochs=2, y_encoder_lr_multiplier=0.0,
                        mixed_precision=False, gradient_checkpointing=False)
    train_predictor(train, val, corpus, ToyEncoder(), cfg, tc, tmp_path / "ck", TrainOptions(max_steps=10,
                    strategy="ddp_spawn", devices=2, progress_bar=False, log_dir=tmp_path / "logs", verbose=False))
    load_checkpoint(tmp_path / "ck")
    rows = list(csv.DictReader(next((tmp_path / "logs").rglob("metrics.csv")).open()))
    cands = {float(r["train_candidates"]) for r in rows if r.get("train_candidates")}
    assert cands == {16.0}  # 2 ranks × batch 8


@pytest.mark.slow
def test_ddp_validation_counts_each_example_once() -> None:
    """3 validation examples on 2 ranks: the distributed sampler pads one rank with a repeat, counted once."""
    import lightning as L
    from torch.utils.data import DataLoader

    from tests.training.test_trainer import ToyEncoder, toy_configs, toy_data
    from training.module import evaluate_retrieval
    from training.trainer import _EvalCollator
    from training.training_set import build_training_sets, index_dataset

    train, val, corpus = toy_data()
    cfg, tc = toy_configs()
    L.seed_everything(0)
    _, val_set, _ = build_training_sets(train, val[:3], corpus, ToyEncoder(), max_context_length=cfg.max_context_length)
    assert val_set is not None
    module = PredictorModule(cfg, tc, total_steps=1, val_set=val_set)
    torch.nn.init.normal_(module.model.output_proj.weight)  # move off the baseline so the rows differ
    want = evaluate_retrieval(module.model, val_set)
    loader = DataLoader(index_dataset(val_set), batch_size=256, collate_fn=_EvalCollator(val_set))
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, precision="32-true")
    got = trainer.validate(module, loader, verbose=False)[0]
    assert got["val_mrr"] == pytest.approx(want["mrr"]) and got["val_r@10"] == pytest.approx(want["r@10"])


@pytest.fixture
def one_rank_group() -> Iterator[None]:
    """A gloo process group of one rank, initialised here as a caller would; destroyed afterwards if still alive."""
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0,
                                         world_size=1)
    yield
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


@pytest.mark.usefixtures("one_rank_group")
def test_train_predictor_leaves_the_callers_process_group_alone(tmp_path: Path) -> None:
    """A group the caller initialised (torchrun, their own init_process_group) outlives the fit."""
    from tests.training.test_trainer import ToyEncoder, toy_configs, toy_data
    from training.trainer import TrainOptions, train_predictor

    train, val, corpus = toy_data()
    cfg, tc = toy_configs()
    train_predictor(train, val, corpus, ToyEncoder(), cfg, tc, tmp_path / "ck", TrainOptions(max_steps=2,
                    progress_bar=False, log_dir=tmp_path / "logs", verbose=False))
    assert torch.distributed.is_initialized()


@pytest.mark.usefixtures("one_rank_group")
def test_release_callback_destroys_only_a_group_it_owns() -> None:
    import lightning as L

    from training.callbacks import ReleaseProcessGroup

    trainer, module = L.Trainer(logger=False, enable_progress_bar=False), _module()
    ReleaseProcessGroup(owned=False).teardown(trainer, module, "fit")
    assert torch.distributed.is_initialized()
    ReleaseProcessGroup(owned=True).teardown(trainer, module, "fit")
    assert not torch.distributed.is_initialized()
