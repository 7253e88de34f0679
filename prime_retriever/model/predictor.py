"""The JEPA-style embedding predictor.

Sequence: ``[PRED] + N context turns + query`` -> bidirectional transformer -> the [PRED] state
-> LayerNorm -> ``output_proj`` -> L2 normalisation, a unit vector in the Y-Encoder's space.

Shapes: B batch, N context turns, D input dim, H hidden dim, O output dim, L = N + 2 tokens,
h heads, d = H / h head dim.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from prime_retriever.errors import PredictorError
from prime_retriever.model.config import PredictorConfig

if TYPE_CHECKING:
    from collections.abc import Iterable


class ContextKV(NamedTuple):
    """Per-layer keys and values of the context turns (prefix layout only)."""

    keys: torch.Tensor  # layers × B × h × N × d
    values: torch.Tensor  # layers × B × h × N × d
    mask: torch.Tensor  # B × N bool, True = real turn


class PredictorOutputs(NamedTuple):
    embedding: torch.Tensor  # B × O, unit norm
    confidence_logit: torch.Tensor  # B


def check_input_shapes(
    config: PredictorConfig, context_shape: tuple[int, ...], query_shape: tuple[int, ...]
) -> tuple[int, int]:
    """Check the shapes of one predictor call against ``config``; return ``(B, N)``.

    Shared by the torch model and the numpy backends, so every path names the expected and the
    received shape in the same words. Raises :class:`PredictorError`.
    """
    D = config.input_dim
    if len(context_shape) != 3 or context_shape[-1] != D:
        raise PredictorError(f"context_embeddings must have shape (B, N, {D}); got {context_shape}")
    if len(query_shape) != 2 or query_shape[-1] != D:
        raise PredictorError(f"query_embedding must have shape (B, {D}); got {query_shape}")
    B, N, _ = context_shape
    if query_shape[0] != B:
        raise PredictorError(f"batch mismatch: context_embeddings has B={B}, query_embedding has B={query_shape[0]}")
    if B == 0:
        raise PredictorError("empty batch: expected B >= 1; got B=0")
    if N == 0:
        raise PredictorError(f"empty context: expected shape (B, N>=1, {D}); got {context_shape}")
    if config.max_context_length < N:
        raise PredictorError(
            f"too many context turns: expected N <= max_context_length={config.max_context_length}; got N={N}"
        )
    return B, N


def check_mask(
    is_bool: bool, mask_shape: tuple[int, ...], B: int, N: int, empty_rows: list[int], dtype: object
) -> None:
    """Check a context mask's dtype and shape, and that every row has a real turn."""
    if not is_bool or mask_shape != (B, N):
        raise PredictorError(f"context_mask must be a bool tensor of shape ({B}, {N}); got {dtype} {mask_shape}")
    if empty_rows:
        raise PredictorError(f"empty context: rows {empty_rows} of context_mask have no real turn")


class SelfAttention(nn.Module):
    """Multi-head self-attention on torch's fused ``scaled_dot_product_attention``."""

    def __init__(self, hidden_dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(hidden_dim, 3 * hidden_dim)
        self.out = nn.Linear(hidden_dim, hidden_dim)
        self.dropout = dropout

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        B, L, H = t.shape
        return t.view(B, L, self.num_heads, H // self.num_heads).transpose(1, 2)  # B × h × L × d

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # 3 × (B × L × H)
        return self._heads(q), self._heads(k), self._heads(v)  # 3 × (B × h × L × d)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        # q: B × h × Lq × d; k, v: B × h × Lk × d; mask: B × 1 × Lq × Lk bool (True = attend)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # B × h × Lq × d
        B, _, Lq, _ = y.shape
        out: torch.Tensor = self.out(y.transpose(1, 2).reshape(B, Lq, -1))  # B × Lq × H
        return out

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.attend(*self.project(x), mask)


class PredictorTransformerBlock(nn.Module):
    """Pre-norm transformer block: self-attention, then a GELU MLP (×4), each with dropout."""

    def __init__(self, hidden_dim: int, num_heads: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_dim)
        self.attention = SelfAttention(hidden_dim, num_heads, dropout)
        self.norm2 = nn.LayerNorm(hidden_dim)
        self.mlp = nn.Sequential(
            nn.Linear(hidden_dim, hidden_dim * 4),
            nn.GELU(),
            nn.Linear(hidden_dim * 4, hidden_dim),
            nn.Dropout(dropout),
        )
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.resid_dropout(self.attention(self.norm1(x), mask))  # B × L × H
        out: torch.Tensor = x + self.mlp(self.norm2(x))  # B × L × H
        return out

    def forward_with_kv(
        self, x: torch.Tensor, k_ctx: torch.Tensor, v_ctx: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Run only the new tokens ``x`` (B × T × H), attending to cached context K/V and themselves."""
        q, k, v = self.attention.project(self.norm1(x))  # B × h × T × d
        k = torch.cat([k_ctx, k], dim=2)  # B × h × (N+T) × d
        v = torch.cat([v_ctx, v], dim=2)
        x = x + self.resid_dropout(self.attention.attend(q, k, v, mask))
        out: torch.Tensor = x + self.mlp(self.norm2(x))
        return out


class EmbeddingPredictor(nn.Module):
    """Predict the Y-Encoder embedding of the ideal document from context turns and the query."""

    def __init__(self, config: PredictorConfig) -> None:
        super().__init__()
        self.config = config
        H = config.hidden_dim
        self.context_proj = nn.Linear(config.input_dim, H)
        self.query_proj = nn.Linear(config.input_dim, H)
        self.pred_token = nn.Parameter(torch.randn(1, 1, H) * 0.02)
        # recency of a context turn: 0 = the most recent turn
        self.turn_position = nn.Embedding(config.max_context_length, H)
        nn.init.normal_(self.turn_position.weight, std=0.02)
        self.layers: nn.ModuleList
        if config.block_type == "llama":
            from prime_retriever.model.llama_blocks import build_llama_blocks

            self.layers = build_llama_blocks(config)
        else:
            self.layers = nn.ModuleList(
                PredictorTransformerBlock(H, config.num_heads, config.dropout) for _ in range(config.num_layers)
            )
        self.norm = nn.LayerNorm(H)
        self.output_proj = nn.Linear(H, config.output_dim)
        # cheap confidence: a logistic head on the (detached) [PRED] state, trained to predict
        # whether the prediction ranks its gold document first among the batch's candidates
        self.confidence_head = nn.Linear(H, 1)
        nn.init.zeros_(self.confidence_head.weight)
        nn.init.zeros_(self.confidence_head.bias)
        self.mix: nn.Linear | None = None
        if config.input_mixing:
            # w_i = mix(h_i) for every context turn and the query; zero at start: output = query
            self.mix = nn.Linear(H, 1)
            nn.init.zeros_(self.mix.weight)
            nn.init.zeros_(self.mix.bias)
        if config.residual:
            # start exactly at the query-embedding baseline: delta = 0
            nn.init.zeros_(self.output_proj.weight)
            nn.init.zeros_(self.output_proj.bias)
        self.gradient_checkpointing = False

    # ------------------------------------------------------------------ construction
    @property
    def device(self) -> torch.device:
        return self.pred_token.device

    @property
    def dtype(self) -> torch.dtype:
        return self.pred_token.dtype

    # ------------------------------------------------------------------ validation
    def validate_inputs(
        self,
        context_embeddings: torch.Tensor,
        query_embedding: torch.Tensor,
        context_mask: torch.Tensor | None = None,
    ) -> None:
        """Raise :class:`PredictorError` naming the expected and received shape, dtype or device."""
        for name, t in (("context_embeddings", context_embeddings), ("query_embedding", query_embedding)):
            if not isinstance(t, torch.Tensor):
                raise PredictorError(f"{name} must be a torch.Tensor; got {type(t).__name__}")
            if t.dtype != self.dtype:
                raise PredictorError(f"{name} must have dtype {self.dtype}; got {t.dtype}")
            if t.device != self.device:
                raise PredictorError(f"{name} must be on device {self.device}; got {t.device}")
        B, N = check_input_shapes(self.config, tuple(context_embeddings.shape), tuple(query_embedding.shape))
        if context_mask is not None:
            if not isinstance(context_mask, torch.Tensor):
                raise PredictorError(
                    f"context_mask must be a torch.bool tensor of shape ({B}, {N}); got {type(context_mask).__name__}"
                )
            if context_mask.device != self.device:
                raise PredictorError(f"context_mask must be on device {self.device}; got {context_mask.device}")
            ok = context_mask.dtype == torch.bool and tuple(context_mask.shape) == (B, N)
            empty = (~context_mask.any(dim=1)).nonzero().flatten().tolist() if ok else []
            check_mask(ok, tuple(context_mask.shape), B, N, empty, context_mask.dtype)
        if not bool(torch.isfinite(context_embeddings).all()):
            raise PredictorError("context_embeddings contains NaN or Inf")
        if not bool(torch.isfinite(query_embedding).all()):
            raise PredictorError("query_embedding contains NaN or Inf")

    # ------------------------------------------------------------------ masks
    def _turn_positions(self, context_mask: torch.Tensor | None, B: int, N: int) -> torch.Tensor:
        """Recency index of every context slot (0 = most recent real turn): B × N long."""
        if context_mask is None:
            return (N - 1 - torch.arange(N, device=self.device)).expand(B, N)
        # real turns at or after each slot, minus one: works for any padding pattern
        return (context_mask.long().flip(1).cumsum(1).flip(1) - 1).clamp(min=0)

    def attention_mask(self, context_mask: torch.Tensor | None, B: int, N: int) -> torch.Tensor | None:
        """Boolean mask B × 1 × L × L (True = may attend) for the sequence [PRED] + context + query.

        Built from broadcasts only (no in-place ops), so it traces into ONNX unchanged.
        """
        if context_mask is None and self.config.attention_layout == "bidirectional":
            return None  # everything attends to everything: the fastest SDPA path
        if context_mask is None:
            context_mask = torch.ones(B, N, dtype=torch.bool, device=self.device)
        one = torch.ones_like(context_mask[:, :1])  # B × 1
        keys = torch.cat([one, context_mask, one], dim=1)  # B × L: [PRED], context, query
        L = N + 2
        mask = keys[:, None, None, :].expand(B, 1, L, L)  # B × 1 × L × L
        if self.config.attention_layout != "prefix":
            return mask
        pos = torch.arange(L, device=self.device)  # L
        is_ctx = (pos >= 1) & (pos <= N)  # L
        allowed = ~is_ctx[:, None] | is_ctx[None, :]  # L × L: context rows see only context keys
        # a padded context row keeps its own key so softmax stays finite (its output is unused)
        pad_row = torch.cat([~one, ~context_mask, ~one], dim=1)  # B × L
        eye = pos[:, None] == pos[None, :]  # L × L
        return (mask & allowed) | (pad_row[:, None, :, None] & eye)

    # ------------------------------------------------------------------ forward
    def _embed(self, context_embeddings: torch.Tensor, context_mask: torch.Tensor | None) -> torch.Tensor:
        B, N, _ = context_embeddings.shape
        ctx: torch.Tensor = self.context_proj(context_embeddings)  # B × N × H
        pos: torch.Tensor = self.turn_position(self._turn_positions(context_mask, B, N))  # B × N × H
        return ctx + pos

    def _run_layers(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        for layer in self.layers:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(layer, x, mask, use_reentrant=False)
            else:
                x = layer(x, mask)
        return x

    def _head(
        self, state: torch.Tensor, query_embedding: torch.Tensor, mixture: torch.Tensor | None = None
    ) -> PredictorOutputs:
        h = self.norm(state)  # B × H
        out = self.output_proj(h)  # B × O
        if self.config.residual:
            out = query_embedding + out
        if mixture is not None:
            out = out + mixture
        embedding = F.normalize(out, p=2, dim=-1)  # B × O
        confidence_logit = self.confidence_head(h.detach()).squeeze(-1)  # B
        return PredictorOutputs(embedding, confidence_logit)

    def predict(
        self,
        context_embeddings: torch.Tensor,  # B × N × D
        query_embedding: torch.Tensor,  # B × D
        context_mask: torch.Tensor | None = None,  # B × N bool
    ) -> PredictorOutputs:
        """The forward pass without input validation (for compiled and exported graphs)."""
        B, N, _ = context_embeddings.shape
        ctx = self._embed(context_embeddings, context_mask)  # B × N × H
        query = self.query_proj(query_embedding).unsqueeze(1)  # B × 1 × H
        pred = self.pred_token.expand(B, -1, -1)  # B × 1 × H
        x = torch.cat([pred, ctx, query], dim=1)  # B × (N+2) × H
        x = self._run_layers(x, self.attention_mask(context_mask, B, N))  # B × (N+2) × H
        mixture = None
        if self.mix is not None:
            w = self.mix(x[:, 1:]).squeeze(-1)  # B × (N+1): a weight per context turn and the query
            if context_mask is not None:
                real = torch.cat([context_mask, torch.ones_like(context_mask[:, :1])], dim=1)  # B × (N+1)
                w = w * real.to(w.dtype)  # padded turns weigh 0
            raw = torch.cat([context_embeddings, query_embedding.unsqueeze(1)], dim=1)  # B × (N+1) × D
            mixture = (w.unsqueeze(-1) * raw).sum(dim=1)  # B × D
        return self._head(x[:, 0], query_embedding, mixture)

    def forward(
        self,
        context_embeddings: torch.Tensor,  # B × N × D
        query_embedding: torch.Tensor,  # B × D
        context_mask: torch.Tensor | None = None,  # B × N bool, True = real turn
    ) -> torch.Tensor:
        """Validate the inputs, then return the predicted unit embedding, B × O."""
        self.validate_inputs(context_embeddings, query_embedding, context_mask)
        return self.predict(context_embeddings, query_embedding, context_mask).embedding

    def predict_with_confidence(
        self,
        context_embeddings: torch.Tensor,  # B × N × D
        query_embedding: torch.Tensor,  # B × D
        context_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(embedding B × O, confidence B in [0, 1])``.

        The confidence is the predicted probability that this prediction ranks its gold document
        first: a logistic head on the [PRED] state (one dot product), trained beside the InfoNCE
        loss with binary cross-entropy against "the positive was the top-1 of the batch's
        candidates". Its gradient never reaches the predictor's trunk. An untrained head says 0.5.
        Before any search it knows little: on the benchmark its AUROC against "the top hit is gold"
        is chance level (0.47-0.54 per framing). A search's own confidence
        (:class:`~prime_retriever.model.score_confidence.ScoreConfidence`, read from its hits' scores) is
        what :class:`~prime_retriever.retrieval.retriever.SearchResult` reports when the checkpoint has one.
        """
        self.validate_inputs(context_embeddings, query_embedding, context_mask)
        out = self.predict(context_embeddings, query_embedding, context_mask)
        return out.embedding, torch.sigmoid(out.confidence_logit)

    # ------------------------------------------------------------------ context K/V cache
    def _require_prefix(self) -> None:
        if self.config.attention_layout != "prefix" or self.config.block_type != "standard":
            raise PredictorError(
                "the context K/V cache needs attention_layout='prefix' and block_type='standard'; "
                f"got attention_layout={self.config.attention_layout!r}, block_type={self.config.block_type!r}"
            )

    def encode_context(self, context_embeddings: torch.Tensor, context_mask: torch.Tensor | None = None) -> ContextKV:
        """Per-layer K/V of the context turns, computable before the query exists (prefix layout).

        Like :meth:`predict`, no input validation (it is compiled with ``fullgraph``): callers check
        their inputs first (:meth:`validate_inputs`; the fast backend runs the same checks on numpy).
        """
        self._require_prefix()
        B, N, _ = context_embeddings.shape
        if context_mask is None:
            context_mask = torch.ones(B, N, dtype=torch.bool, device=self.device)
        x = self._embed(context_embeddings, context_mask)  # B × N × H
        eye = torch.eye(N, dtype=torch.bool, device=self.device)
        mask = (context_mask[:, None, :] | (~context_mask[:, :, None] & eye))[:, None]  # B × 1 × N × N
        keys, values = [], []
        for layer in self.layers:
            assert isinstance(layer, PredictorTransformerBlock)
            _, k, v = layer.attention.project(layer.norm1(x))  # B × h × N × d
            keys.append(k)
            values.append(v)
            x = layer(x, mask)
        return ContextKV(torch.stack(keys), torch.stack(values), context_mask)

    def predict_from_context(self, kv: ContextKV, query_embedding: torch.Tensor) -> PredictorOutputs:
        """Run only [PRED] and the query (B × 2 tokens) against cached context K/V (no input validation,
        as :meth:`encode_context`)."""
        self._require_prefix()
        B = query_embedding.shape[0]
        query = self.query_proj(query_embedding).unsqueeze(1)  # B × 1 × H
        x = torch.cat([self.pred_token.expand(B, -1, -1), query], dim=1)  # B × 2 × H
        own = torch.ones(B, 2, dtype=torch.bool, device=self.device)
        mask = torch.cat([kv.mask, own], dim=1)[:, None, None, :].expand(B, 1, 2, -1)  # B × 1 × 2 × (N+2)
        for i, layer in enumerate(self.layers):
            assert isinstance(layer, PredictorTransformerBlock)
            x = layer.forward_with_kv(x, kv.keys[i], kv.values[i], mask)
        return self._head(x[:, 0], query_embedding)

    # ------------------------------------------------------------------ misc
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def trunk_parameters(self) -> Iterable[nn.Parameter]:
        """Every parameter except the confidence head's."""
        head = {id(p) for p in self.confidence_head.parameters()}
        return (p for p in self.parameters() if id(p) not in head)
