"""The LightningModule that trains an :class:`~prime_retriever.model.predictor.EmbeddingPredictor`.

Loss: InfoNCE (in-batch negatives, gathered across ranks WITH gradients under DDP, false
negatives masked, optional hard negatives) plus ``confidence_weight`` × a BCE term that trains the
predictor's ``confidence_head`` to predict "the positive is the top-1 among the batch's
candidates" (a detached target; the head already sees a detached state, so it never moves the
trunk). Optimiser: AdamW, linear warmup then cosine decay, stepped every optimiser step.

Y-Encoder: ``y_encoder_lr_multiplier == 0`` (the default path here) keeps it frozen and the
targets pre-encoded; ``> 0`` fine-tunes a Hugging Face encoder (:class:`TrainableYEncoder`) held by
the module, re-encoding the positive (and hard-negative) texts every step at ``lr × multiplier``.

Validation (each epoch): every held-out example's prediction is ranked against the whole corpus
matrix by exact cosine; logged as ``val_r@10`` (share of gold documents in the top 10, averaged
over examples) and ``val_mrr`` (reciprocal rank of the first gold), next to the query-embedding
baseline's ``val_baseline_r@10`` / ``val_baseline_mrr``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from prime_retriever.model.config import PredictorConfig
from prime_retriever.model.predictor import EmbeddingPredictor
from training.losses import InfoNCELoss
from training.training_config import TrainingConfig
from training.training_set import Batch, TrainingSet, stratified_mean

__all__ = [
    "PredictorModule",
    "TrainableYEncoder",
    "evaluate_retrieval",
    "gather_with_grad",
    "retrieval_metrics",
    "top_two_scores",
    "warmup_cosine",
]


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """LR factor: linear warmup from 0 to 1 over ``warmup_steps``, then cosine decay to 0 at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _dist_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def gather_with_grad(t: torch.Tensor) -> torch.Tensor:
    """Concatenate ``t`` (B × ...) of every rank along dim 0, keeping gradients (identity on one process).

    Uses ``torch.distributed.nn.functional.all_gather``, whose backward sums every rank's gradient
    of the gathered tensor back to its owner (like sentence-transformers' ``all_gather_with_grad``).
    """
    _, world = _dist_world()
    if world == 1:
        return t
    from torch.distributed.nn.functional import all_gather

    parts: tuple[torch.Tensor, ...] = all_gather(t)  # type: ignore[no-untyped-call]
    return torch.cat(parts, dim=0)  # (world·B) × ...


def gather_no_grad(t: torch.Tensor) -> torch.Tensor:
    """Concatenate ``t`` of every rank along dim 0 (no gradient)."""
    _, world = _dist_world()
    if world == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(world)]
    torch.distributed.all_gather(parts, t.contiguous())
    return torch.cat(parts, dim=0)


def ranking_scores(
    predicted: torch.Tensor,  # B × D unit
    corpus: torch.Tensor,  # C × D unit
    excluded: torch.Tensor | None = None,  # B × X long, -1 padded
) -> torch.Tensor:
    """``B × C`` cosine scores in fp32 (even under autocast), ``-inf`` at each row's ``excluded`` columns."""
    with torch.autocast(device_type=predicted.device.type, enabled=False):
        scores = predicted.float() @ corpus.float().T  # B × C
    if excluded is not None and excluded.numel():
        ex_valid = excluded >= 0
        rows = torch.arange(scores.shape[0], device=scores.device)[:, None].expand_as(excluded)
        scores[rows[ex_valid], excluded[ex_valid]] = float("-inf")
    return scores


def retrieval_metrics(
    predicted: torch.Tensor,  # B × D unit
    corpus: torch.Tensor,  # C × D unit
    gold: torch.Tensor,  # B × G long, -1 padded
    excluded: torch.Tensor | None = None,  # B × X long, -1 padded
    k: int = 10,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example ``(recall@k, reciprocal rank)``, each ``B`` float, by exact cosine over the corpus.

    recall@k = share of the example's gold documents ranked in the top ``k``; the reciprocal rank
    is ``1 / rank`` of its best-ranked gold. ``excluded`` rows are dropped from the candidates.
    Ties count against the gold (a document scoring as high ranks ahead of it), and a gold whose
    score is not finite ranks last, so a collapsed (constant) or diverged (NaN) model scores the
    worst, not the best. Scores are computed in fp32 even under autocast.
    """
    scores = ranking_scores(predicted, corpus, excluded)  # B × C
    C = scores.shape[1]
    valid = gold >= 0  # B × G
    gold_scores = scores.gather(1, gold.clamp(min=0))  # B × G
    # 1 = best: the gold itself plus every other candidate scoring at least as high (NaN compares False)
    ranks = (scores[:, None, :] >= gold_scores[:, :, None]).sum(dim=2)  # B × G
    ranks = torch.where(torch.isfinite(gold_scores), ranks, torch.full_like(ranks, C))
    hit = ((ranks <= k) & valid).sum(dim=1).float()  # B
    recall = hit / valid.sum(dim=1).clamp(min=1).float()
    best = ranks.masked_fill(~valid, torch.iinfo(ranks.dtype).max).min(dim=1).values  # B
    return recall, 1.0 / best.float()


def _prediction_batches(
    model: EmbeddingPredictor | None, vset: TrainingSet, batch_size: int
) -> Iterator[tuple[slice, torch.Tensor]]:
    """``(rows, b × D predictions)`` over ``vset`` in eval mode (the query rows when ``model`` is None);
    the model's train/eval mode is restored afterwards."""
    was_training = model.training if model is not None else False
    if model is not None:
        model.eval()
    try:
        for start in range(0, len(vset), batch_size):
            sl = slice(start, start + batch_size)
            if model is None:
                yield sl, vset.query[sl]
                continue
            mask = vset.context_mask[sl]
            n = max(int(mask.sum(dim=1).max()), 1)
            yield sl, model.predict(
                vset.context[sl, :n].to(model.device, model.dtype),
                vset.query[sl].to(model.device, model.dtype),
                mask[:, :n].to(model.device),
            ).embedding
    finally:
        if model is not None and was_training:
            model.train()


@torch.no_grad()
def evaluate_retrieval(
    model: EmbeddingPredictor | None,
    vset: TrainingSet,
    corpus: torch.Tensor | None = None,
    *,
    k: int = 10,
    batch_size: int = 256,
) -> dict[str, float]:
    """R@k and MRR of ``model`` (or of the query-embedding baseline when ``model`` is None) on ``vset``."""
    corpus_m = vset.corpus if corpus is None else corpus  # C × D
    if model is not None:
        corpus_m = corpus_m.to(model.device)
    rec: list[torch.Tensor] = []
    rr: list[torch.Tensor] = []
    for sl, pred in _prediction_batches(model, vset, batch_size):
        r, m = retrieval_metrics(pred, corpus_m.to(pred.device), vset.gold[sl].to(pred.device),
                                 vset.excluded[sl].to(pred.device), k)
        rec.append(r.cpu())
        rr.append(m.cpu())
    return {f"r@{k}": stratified_mean(torch.cat(rec), vset.stratum),
            "mrr": stratified_mean(torch.cat(rr), vset.stratum)}


@torch.no_grad()
def top_two_scores(
    model: EmbeddingPredictor, vset: TrainingSet, corpus: torch.Tensor | None = None, *, batch_size: int = 256
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(s_1, s_2, top_is_gold)``, each ``E``: the two best cosine scores of every prediction over the
    corpus (``excluded`` rows dropped; ``s_2 = s_1`` for a one-document corpus) and whether the best is gold.

    What :class:`~prime_retriever.model.score_confidence.ScoreConfidence` is fitted on.
    """
    corpus_m = (vset.corpus if corpus is None else corpus).to(model.device)  # C × D
    s1: list[torch.Tensor] = []
    s2: list[torch.Tensor] = []
    hit: list[torch.Tensor] = []
    for sl, pred in _prediction_batches(model, vset, batch_size):
        scores = ranking_scores(pred, corpus_m, vset.excluded[sl].to(pred.device))  # b × C
        top = scores.topk(min(2, scores.shape[1]), dim=1)  # b × 2
        gold = vset.gold[sl].to(scores.device)  # b × G
        s1.append(top.values[:, 0].cpu())
        s2.append(top.values[:, -1].cpu())
        hit.append(((gold == top.indices[:, :1]) & (gold >= 0)).any(dim=1).cpu())
    return torch.cat(s1), torch.cat(s2), torch.cat(hit)


class TrainableYEncoder(nn.Module):
    """A Hugging Face encoder fine-tuned as the Y-Encoder: masked mean pooling + L2 norm (MiniLM recipe)."""

    def __init__(self, model_path: str | Path, max_length: int = 256) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        self.model_path = str(model_path)
        self.tokenizer: Any = AutoTokenizer.from_pretrained(self.model_path, local_files_only=True)
        self.model: Any = AutoModel.from_pretrained(self.model_path, local_files_only=True)
        self.max_length = max_length

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        tok = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        tok = {k: v.to(device) for k, v in tok.items()}
        hidden: torch.Tensor = self.model(**tok).last_hidden_state  # B × T × D
        mask = tok["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # B × T × 1
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)  # B × D
        return F.normalize(pooled, p=2, dim=-1)

    def save_pretrained(self, path: str | Path) -> None:
        self.model.save_pretrained(str(path))
        self.tokenizer.save_pretrained(str(path))


class PredictorModule(L.LightningModule):
    """Lightning wrapper of :class:`EmbeddingPredictor`; see the module doc.

    Args:
        predictor_config / training_config: the model and the hyper-parameters.
        total_steps: optimiser steps of the whole run (for the cosine schedule).
        val_set: held-out examples against the validation corpus matrix (None: no validation).
        num_hard_negatives: explicit hard negatives per row expected in batches (0: in-batch only).
        confidence_weight: weight of the confidence head's BCE term.
        y_encoder: the trainable Y-Encoder (needed when ``y_encoder_lr_multiplier > 0``).
        corpus_texts: ``corpus_texts[row]`` is the text the Y-Encoder encodes for corpus row ``row``.
        model: an already-built predictor (e.g. initialised from Llama) instead of a fresh one.
    """

    def __init__(
        self,
        predictor_config: PredictorConfig,
        training_config: TrainingConfig,
        *,
        total_steps: int,
        val_set: TrainingSet | None = None,
        num_hard_negatives: int = 0,
        confidence_weight: float = 0.1,
        y_encoder: TrainableYEncoder | None = None,
        corpus_texts: Sequence[str] | None = None,
        model: EmbeddingPredictor | None = None,
    ) -> None:
        super().__init__()
        self.predictor_config = predictor_config
        self.training_config = training_config
        self.model = model if model is not None else EmbeddingPredictor(predictor_config)
        if training_config.gradient_checkpointing:
            self.model.gradient_checkpointing = True
        self.loss_fn = InfoNCELoss(training_config.temperature)
        self.total_steps = max(int(total_steps), 1)
        warmup = training_config.warmup_steps
        # a warmup as long as the run would never leave warmup: cap it at 10% of the run
        self.warmup_steps = warmup if warmup < self.total_steps // 2 else self.total_steps // 10
        self.val_set = val_set
        self.num_hard_negatives = num_hard_negatives
        self.confidence_weight = confidence_weight
        self.y_encoder_trainable = training_config.y_encoder_lr_multiplier > 0
        if self.y_encoder_trainable and (y_encoder is None or corpus_texts is None):
            raise ValueError("y_encoder_lr_multiplier > 0 needs a TrainableYEncoder and the corpus texts")
        self.y_encoder = y_encoder if self.y_encoder_trainable else None
        self.corpus_texts = list(corpus_texts) if corpus_texts is not None else None
        self.last_num_candidates = 0
        self.baseline: dict[str, float] = {}
        self._val_rec: list[torch.Tensor] = []
        self._val_rr: list[torch.Tensor] = []
        self._val_stratum: list[torch.Tensor] = []
        self._val_index: list[torch.Tensor] = []
        self._val_corpus: torch.Tensor | None = None
        self.history: list[dict[str, float]] = []

    # ------------------------------------------------------------------ optimiser
    def configure_optimizers(self) -> Any:
        tc = self.training_config
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for p in self.model.parameters():
            if p.requires_grad:
                (decay if p.dim() >= 2 else no_decay).append(p)
        groups: list[dict[str, Any]] = [
            {"params": decay, "weight_decay": tc.weight_decay, "lr": tc.learning_rate},
            {"params": no_decay, "weight_decay": 0.0, "lr": tc.learning_rate},
        ]
        if self.y_encoder is not None:
            groups.append({"params": [p for p in self.y_encoder.parameters() if p.requires_grad],
                           "weight_decay": tc.weight_decay,
                           "lr": tc.learning_rate * tc.y_encoder_lr_multiplier})
        opt = torch.optim.AdamW(groups, lr=tc.learning_rate)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: warmup_cosine(s, self.warmup_steps, self.total_steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}

    # ------------------------------------------------------------------ training
    def _encode_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Re-encode corpus ``rows`` (any shape, -1 = none → zeros) with the trainable Y-Encoder: shape + (D,)."""
        assert self.y_encoder is not None and self.corpus_texts is not None
        flat = rows.reshape(-1)
        uniq, inverse = torch.unique(flat.clamp(min=0), return_inverse=True)
        vecs = self.y_encoder([self.corpus_texts[int(r)] for r in uniq.tolist()])  # U × D
        out: torch.Tensor = vecs[inverse] * (flat >= 0).to(vecs.dtype)[:, None]
        return out.reshape(*rows.shape, -1)

    def compute_loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        """InfoNCE + confidence BCE of one batch; also returns the candidates count and top-1 accuracy."""
        out = self.model.predict(batch["context"], batch["query"], batch["context_mask"])
        pred = out.embedding.float()  # B × D
        if self.y_encoder is not None:
            target = self._encode_rows(batch["positive_row"]).float()  # B × D, with grad
        else:
            target = batch["target"].float()  # B × D
        hard = batch.get("hard_negatives")
        if hard is not None and self.y_encoder is not None:
            hard = self._encode_rows(batch["hard_negative_rows"]).float()  # B × K × D
        rank, _ = _dist_world()
        B = pred.shape[0]
        targets_all = gather_with_grad(target)  # (world·B) × D
        ids_all = gather_no_grad(batch["positive_row"])  # world·B
        labels = torch.arange(B, device=pred.device) + rank * B  # B
        logits, labels = self.loss_fn.logits(
            pred, targets_all,
            hard_negatives=None if hard is None else hard.float(),
            hard_negative_mask=batch.get("hard_negative_mask"),
            positive_ids=ids_all, gold_ids=batch["gold"], labels=labels,
        )
        nce = F.cross_entropy(logits.float(), labels)
        top1 = (logits.argmax(dim=1) == labels).float().detach()  # B
        conf = F.binary_cross_entropy_with_logits(out.confidence_logit.float(), top1)
        self.last_num_candidates = int(targets_all.shape[0])
        return {
            "loss": nce + self.confidence_weight * conf,
            "infonce": nce.detach(),
            "confidence_bce": conf.detach(),
            "top1": top1.mean(),
            "candidates": torch.tensor(float(targets_all.shape[0])),
        }

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        parts = self.compute_loss(batch)
        B = batch["query"].shape[0]
        self.log("train_loss", parts["infonce"], prog_bar=True, on_step=True, on_epoch=True, batch_size=B)
        self.log("train_confidence_bce", parts["confidence_bce"], on_step=False, on_epoch=True, batch_size=B)
        self.log("train_top1", parts["top1"], on_step=False, on_epoch=True, batch_size=B)
        self.log("train_candidates", parts["candidates"], on_step=True, on_epoch=False, batch_size=B)
        return parts["loss"]

    # ------------------------------------------------------------------ validation
    def validation_corpus(self) -> torch.Tensor:
        """The validation candidates (C × D): the pre-encoded corpus, or re-encoded by the trainable Y-Encoder."""
        assert self.val_set is not None
        if self.y_encoder is None or self.corpus_texts is None:
            return self.val_set.corpus.to(self.device)
        chunks = []
        with torch.no_grad():
            for s in range(0, len(self.corpus_texts), 128):
                chunks.append(self.y_encoder(self.corpus_texts[s : s + 128]).float())
        return torch.cat(chunks)

    def on_validation_epoch_start(self) -> None:
        self._val_rec, self._val_rr, self._val_stratum, self._val_index = [], [], [], []
        self._val_corpus = self.validation_corpus() if self.val_set is not None else None
        vs = self.val_set
        if vs is not None and not self.baseline and vs.query.shape[1] == vs.corpus.shape[1]:
            self.baseline = evaluate_retrieval(None, vs)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        assert self._val_corpus is not None
        out = self.model.predict(batch["context"], batch["query"], batch["context_mask"])
        r, m = retrieval_metrics(out.embedding, self._val_corpus, batch["gold"], batch["excluded"])
        self._val_rec.append(r)
        self._val_rr.append(m)
        self._val_stratum.append(batch.get("stratum", torch.zeros_like(batch["index"])))
        self._val_index.append(batch["index"])

    def on_validation_epoch_end(self) -> None:
        if not self._val_rec:
            return
        rec = torch.cat(self._val_rec)  # n
        rr = torch.cat(self._val_rr)  # n
        st = torch.cat(self._val_stratum).to(rec.device)  # n
        index = torch.cat(self._val_index).to(rec.device)  # n
        # Under DDP every rank holds an equal share, which the distributed sampler pads with repeated
        # examples: gather all ranks' rows and count each validation example once.
        rec, rr, st, index = (gather_no_grad(t) for t in (rec, rr, st, index))  # N each
        first = torch.full((int(index.max()) + 1,), len(index), dtype=torch.long, device=index.device)
        first.scatter_reduce_(0, index, torch.arange(len(index), device=index.device), reduce="amin")
        keep = torch.zeros(len(index), dtype=torch.bool, device=index.device)
        keep[first[first < len(index)]] = True
        rec, rr, st = rec[keep], rr[keep], st[keep]
        vs = self.val_set
        S = int(vs.stratum.max()) + 1 if vs is not None and vs.stratum is not None else 1
        # per-stratum sums and counts (S × 3), then macro-averaged over strata
        sums = torch.zeros(S, 3, device=rec.device)
        sums.index_add_(0, st, torch.stack([rec, rr, torch.ones_like(rec)], dim=1))
        present = sums[:, 2] > 0
        per = sums[present, :2] / sums[present, 2:3]  # S' × 2
        metrics = {"val_r@10": float(per[:, 0].mean()), "val_mrr": float(per[:, 1].mean())}
        self.log("val_r@10", metrics["val_r@10"], prog_bar=True, rank_zero_only=False)
        self.log("val_mrr", metrics["val_mrr"], prog_bar=True, rank_zero_only=False)
        if self.baseline:
            self.log("val_baseline_r@10", self.baseline["r@10"])
            self.log("val_baseline_mrr", self.baseline["mrr"])
        self.history.append({"step": float(self.global_step), **metrics})
        self._val_corpus = None
