"""The ``linear_adapter`` baseline: a D×D linear map on the query embedding, identity-initialised.

It is the strong cheap baseline of the query-adaptation literature: it sees only the query, and
is trained with the same InfoNCE loss (τ = 0.07, in-batch negatives, false-negative masking) on
the same examples as the predictor, early-stopped on the same validation split.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from prime_retriever.errors import CheckpointError
from prime_retriever.text.onnx_encoder import model_of
from training.losses import InfoNCELoss
from training.module import evaluate_retrieval
from training.training_set import TrainingSet, collate_training_batch


class LinearAdapter(nn.Module):
    """``normalize(W q + b)`` with ``W = I``, ``b = 0`` at initialisation: exactly the query baseline."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        with torch.no_grad():
            self.linear.weight.copy_(torch.eye(dim))
            self.linear.bias.zero_()

    def forward(self, query: torch.Tensor) -> torch.Tensor:  # B × D -> B × D
        return F.normalize(self.linear(query), dim=-1)

    def transform(self, query: np.ndarray) -> np.ndarray:
        """numpy in/out: B × D float32 -> B × D float32 unit rows."""
        with torch.inference_mode():
            out: np.ndarray = self(torch.as_tensor(query, dtype=torch.float32)).numpy()
        return out


@dataclass
class AdapterResult:
    adapter: LinearAdapter
    val_mrr: float
    epochs: int


class _QueryOnly(nn.Module):
    """Let :func:`evaluate_retrieval` score the adapter like a predictor."""

    def __init__(self, adapter: LinearAdapter) -> None:
        super().__init__()
        self.adapter = adapter

    @property
    def device(self) -> torch.device:
        return self.adapter.linear.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.adapter.linear.weight.dtype

    def predict(self, context: torch.Tensor, query: torch.Tensor, mask: torch.Tensor) -> _Out:
        return _Out(self.adapter(query))


@dataclass
class _Out:
    embedding: torch.Tensor


def train_adapter(
    train: TrainingSet,
    val: TrainingSet | None,
    *,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    batch_size: int = 64,
    max_epochs: int = 30,
    patience: int = 3,
    temperature: float = 0.07,
    seed: int = 0,
) -> AdapterResult:
    """Train with InfoNCE; keep the epoch with the best validation MRR (epoch 0 = identity)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    adapter = LinearAdapter(train.query.shape[1])
    opt = torch.optim.AdamW(adapter.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = InfoNCELoss(temperature)

    def score() -> float:
        if val is None:
            return float("nan")
        return evaluate_retrieval(_QueryOnly(adapter), val)["mrr"]  # type: ignore[arg-type]

    best, best_state, best_epoch, bad = score(), {k: v.clone() for k, v in adapter.state_dict().items()}, 0, 0
    epoch = 0
    for epoch in range(1, max_epochs + 1):
        adapter.train()
        order = torch.randperm(len(train), generator=gen)
        for start in range(0, len(order) - 1, batch_size):
            idx = order[start : start + batch_size].tolist()
            if len(idx) < 2:
                continue
            b = collate_training_batch(train, idx, generator=gen)
            loss = loss_fn(adapter(b["query"]), b["target"], positive_ids=b["positive_row"], gold_ids=b["gold"])
            opt.zero_grad()
            loss.backward()
            opt.step()
        adapter.eval()
        if val is None:
            continue
        s = score()
        if s > best:
            best, best_epoch, bad = s, epoch, 0
            best_state = {k: v.clone() for k, v in adapter.state_dict().items()}
        else:
            bad += 1
            if bad >= patience:
                break
    if val is not None:
        adapter.load_state_dict(best_state)
    adapter.eval()
    return AdapterResult(adapter=adapter, val_mrr=best, epochs=best_epoch if val is not None else epoch)


def save_adapter(adapter: LinearAdapter, path: Path, encoder_name: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in adapter.state_dict().items()}, str(path / "adapter.safetensors"))
    dim = adapter.linear.weight.shape[0]
    (path / "adapter.json").write_text(json.dumps({"dim": dim, "encoder": encoder_name}))


def load_adapter(path: Path, encoder_name: str) -> LinearAdapter:
    try:
        meta = json.loads((path / "adapter.json").read_text(encoding="utf-8"))
        state = load_file(str(path / "adapter.safetensors"))
    except (OSError, ValueError, SafetensorError) as e:
        raise CheckpointError(f"cannot read the linear adapter at {path}: {e}") from e
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path / 'adapter.json'} is not a JSON object")
    if model_of(str(meta.get("encoder"))) != model_of(encoder_name):
        raise CheckpointError(f"adapter {path} was trained for encoder {meta.get('encoder')!r}, not {encoder_name!r}")
    dim = meta.get("dim")
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise CheckpointError(f"{path / 'adapter.json'}: 'dim' must be a positive integer, got {dim!r}")
    adapter = LinearAdapter(dim)
    try:
        adapter.load_state_dict(state)
    except RuntimeError as e:  # missing, unexpected or mis-shaped tensors
        raise CheckpointError(f"the linear adapter at {path} does not match its dim {dim}: {e}") from e
    return adapter.eval()
