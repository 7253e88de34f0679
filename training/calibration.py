"""Fit a trained checkpoint's search-score confidence on the validation split and save it in the checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch

from prime_retriever.model.checkpoint import attach_score_confidence, load_checkpoint
from prime_retriever.model.score_confidence import ScoreConfidence
from training.module import top_two_scores
from training.training_set import TrainingSet

__all__ = ["calibrate_checkpoint"]


def calibrate_checkpoint(path: Path, val_set: TrainingSet) -> ScoreConfidence | None:
    """Fit the search-score confidence of the checkpoint at ``path`` on ``val_set`` and save it there.

    The kept (best) weights predict every validation row; the two best scores over the validation
    corpus and whether the best is gold fit :class:`ScoreConfidence`. ``None`` (and the checkpoint
    unchanged) when fewer than 2 rows have a finite top score.
    """
    loaded = load_checkpoint(path)
    s1, s2, hit = top_two_scores(loaded.model, val_set)
    keep = torch.isfinite(s1)
    if int(keep.sum()) < 2:
        return None
    s1, s2, hit = s1[keep], s2[keep], hit[keep]
    s2 = torch.where(torch.isfinite(s2), s2, s1)  # one candidate left: margin 0, as the retriever reads it
    calibration = ScoreConfidence.fit(s1.numpy(), s2.numpy(), hit.numpy())
    attach_score_confidence(loaded, calibration)
    return calibration
