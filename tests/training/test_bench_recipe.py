"""The benchmark recipe's training is bounded by its schedule, so its result does not depend on the machine's speed."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from lightning.pytorch.callbacks import timer as lightning_timer

from prime_retriever.model.checkpoint import WEIGHTS_FILE
from tests.training.test_trainer import ToyEncoder, toy_configs, toy_data
from training.bench.recipe import Recipe
from training.trainer import TrainOptions, train_predictor


def _train(out: Path) -> tuple[str, str, int]:
    train, val, corpus = toy_data()
    cfg, tc = toy_configs()
    res = train_predictor(train, val, corpus, ToyEncoder(), cfg, tc, out, TrainOptions(
        time_budget_s=Recipe().time_budget_s, progress_bar=False, verbose=False, logger=None, seed=3))
    return hashlib.sha256((out / WEIGHTS_FILE).read_bytes()).hexdigest(), res.stop_reason, res.steps


def test_a_slow_machine_trains_the_recipe_to_the_same_checkpoint(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    fast = _train(tmp_path / "fast")
    # a machine on which every reading of the training clock is a minute later than the last: the ~10 steps
    # of the toy schedule then take over 10 minutes (on main the recipe's 420 s budget cut them short)
    clock = [time.monotonic()]

    def slow_monotonic() -> float:
        clock[0] += 60.0
        return clock[0]

    monkeypatch.setattr(lightning_timer, "time", SimpleNamespace(monotonic=slow_monotonic))
    slow = _train(tmp_path / "slow")
    assert clock[0] - time.monotonic() > 420  # the slow run really took longer than the old budget
    assert slow == fast
    assert fast[1] in ("max_epochs", "early_stopping")
