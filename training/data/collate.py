"""Batch collation of already-encoded vectors into padded torch tensors.

Pure functions, no encoder involved. Per example the caller gives its context-turn vectors (an
``(n_i, D)`` array, oldest turn first, ``n_i >= 1``) and its query vector ``(D,)``; optionally a
target vector ``(D,)`` (e.g. the positive document's embedding). :func:`collate` keeps the most
recent ``max_context_length`` turns of each context, right-pads to the longest context in the
batch and returns:

* ``context``: ``(B, N, D)`` float32, zeros at padded positions;
* ``context_mask``: ``(B, N)`` bool, ``True`` = real turn (real turns come first, in order);
* ``query``: ``(B, D)`` float32;
* ``target``: ``(B, D)`` float32 or ``None``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from prime_retriever.errors import DataError

ArrayLike = npt.NDArray[np.floating] | Sequence[Sequence[float]] | torch.Tensor
VectorLike = npt.NDArray[np.floating] | Sequence[float] | torch.Tensor


@dataclass(frozen=True)
class CollatedBatch:
    """A padded batch; see the module doc for shapes."""

    context: torch.Tensor
    context_mask: torch.Tensor
    query: torch.Tensor
    target: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> CollatedBatch:
        """The same batch on ``device``."""
        return CollatedBatch(self.context.to(device), self.context_mask.to(device), self.query.to(device),
                             None if self.target is None else self.target.to(device))


def _as_2d(x: ArrayLike, what: str) -> npt.NDArray[np.float32]:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    arr = arr.astype(np.float32, copy=False)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise DataError(f"{what}: expected a (turns, dim) array, got shape {arr.shape}")
    return arr


def _as_1d(x: VectorLike, what: str) -> npt.NDArray[np.float32]:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    arr = arr.astype(np.float32, copy=False)
    if arr.ndim != 1:
        raise DataError(f"{what}: expected a (dim,) vector, got shape {arr.shape}")
    return arr


def collate(
    contexts: Sequence[ArrayLike],
    queries: Sequence[VectorLike],
    targets: Sequence[VectorLike] | None = None,
    *,
    max_context_length: int | None = None,
) -> CollatedBatch:
    """Pad a batch of encoded examples; see the module doc.

    Raises :class:`DataError` on an empty batch, an empty context, mismatched lengths or dims,
    or a ``max_context_length`` below 1.
    """
    if not contexts:
        raise DataError("collate: empty batch")
    if len(queries) != len(contexts) or (targets is not None and len(targets) != len(contexts)):
        raise DataError("collate: contexts, queries and targets must have the same length")
    if max_context_length is not None and max_context_length < 1:
        raise DataError(f"collate: max_context_length must be >= 1, got {max_context_length}")
    ctx = [_as_2d(c, f"context {i}") for i, c in enumerate(contexts)]
    qs = [_as_1d(q, f"query {i}") for i, q in enumerate(queries)]
    dim = qs[0].shape[0]
    for i, (c, q) in enumerate(zip(ctx, qs, strict=True)):
        if c.shape[0] == 0:
            raise DataError(f"collate: example {i} has an empty context")
        if c.shape[1] != dim or q.shape[0] != dim:
            raise DataError(f"collate: example {i} has dim {c.shape[1]}/{q.shape[0]}, expected {dim}")
    if max_context_length is not None:
        ctx = [c[-max_context_length:] for c in ctx]
    n = max(c.shape[0] for c in ctx)
    out = np.zeros((len(ctx), n, dim), dtype=np.float32)
    mask = np.zeros((len(ctx), n), dtype=np.bool_)
    for i, c in enumerate(ctx):
        out[i, : c.shape[0]] = c
        mask[i, : c.shape[0]] = True
    target_t: torch.Tensor | None = None
    if targets is not None:
        ts = [_as_1d(t, f"target {i}") for i, t in enumerate(targets)]
        if any(t.shape[0] != dim for t in ts):
            raise DataError(f"collate: target dims must all be {dim}")
        target_t = torch.from_numpy(np.stack(ts))
    return CollatedBatch(context=torch.from_numpy(out), context_mask=torch.from_numpy(mask),
                         query=torch.from_numpy(np.stack(qs)), target=target_t)
