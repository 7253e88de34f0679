"""Configuration of the predictor and of its training (pydantic, frozen).

The fields, defaults and bounds are the specification's (section 8). Fields added since the
spec, each with a default that keeps the spec's behaviour, are marked "(added)".
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
DEFAULT_EMBEDDING_DIM = 1024


class PredictorConfig(BaseModel):
    """Configuration of :class:`prime_retriever.model.predictor.EmbeddingPredictor`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input_dim: int = Field(
        default=DEFAULT_EMBEDDING_DIM, ge=1, description="Input embedding dimension (match X-Encoder)"
    )
    hidden_dim: int = Field(default=2048, ge=1, description="Transformer hidden dimension")
    output_dim: int = Field(default=DEFAULT_EMBEDDING_DIM, ge=1, description="Output dimension (match Y-Encoder)")
    num_layers: int = Field(default=4, ge=1, le=12, description="Number of transformer layers")
    num_heads: int = Field(default=8, ge=1, description="Number of attention heads")
    max_context_length: int = Field(default=10, ge=1, description="Maximum context turns")
    dropout: float = Field(default=0.1, ge=0.0, le=0.5, description="Dropout probability")
    checkpoint_path: str | None = Field(default=None, description="Path to model checkpoint")

    # Static shapes / compilation
    use_static_cache: bool = Field(default=True, description="Static shapes and the context K/V cache")
    use_torch_compile: bool = Field(default=True, description="Enable torch.compile() (CUDA graphs on CUDA)")
    compile_mode: str = Field(
        default="reduce-overhead", description="torch.compile mode: 'default', 'reduce-overhead', 'max-autotune'"
    )
    max_batch_size: int = Field(default=32, ge=1, description="Max batch size for static shape compilation")

    # (added) architecture options
    attention_layout: Literal["bidirectional", "prefix"] = Field(
        default="bidirectional",
        description=(
            "'bidirectional': every token attends to every token. 'prefix': context turns attend only to "
            "context turns, [PRED] and the query attend to everything, so the context's per-layer K/V can "
            "be computed before the query arrives (the context K/V cache)."
        ),
    )
    residual: bool = Field(
        default=False,
        description=(
            "(added) output = normalize(query + delta): start from the query embedding (needs input_dim == output_dim)"
        ),
    )
    input_mixing: bool = Field(
        default=False,
        description=(
            "(added) learned Rocchio-style mixing: output = normalize(query + sum_i w_i x_i + delta), where "
            "x_i are the raw context-turn and query embeddings and w_i a zero-initialised linear score of "
            "each token's final state (needs residual=True and the bidirectional layout)"
        ),
    )
    link_candidates: int = Field(
        default=0,
        ge=0,
        description=(
            "(added) trained with link expansion: up to this many title-linked documents join the context as "
            "its oldest turns (see prime_retriever.retrieval.link_graph.LinkExpansion); 0 = no expansion"
        ),
    )
    link_seeds: int = Field(
        default=1, ge=0, description="(added) link expansion: how many top hits of the query embedding seed it"
    )
    block_type: Literal["standard", "llama"] = Field(
        default="standard",
        description="(added) 'llama': Llama decoder layers (RMSNorm, RoPE, SwiGLU, GQA), bidirectional",
    )
    llama_config: dict[str, Any] | None = Field(
        default=None, description="(added) the LlamaConfig (as a dict) of the blocks when block_type == 'llama'"
    )

    @field_validator("compile_mode")
    @classmethod
    def _check_compile_mode(cls, v: str) -> str:
        if v not in COMPILE_MODES:
            raise ValueError(f"compile_mode must be one of {', '.join(map(repr, COMPILE_MODES))}; got {v!r}")
        return v

    @model_validator(mode="after")
    def _check_cross_fields(self) -> PredictorConfig:
        if self.hidden_dim % self.num_heads != 0:
            raise ValueError(f"hidden_dim ({self.hidden_dim}) must be divisible by num_heads ({self.num_heads})")
        if self.residual and self.input_dim != self.output_dim:
            raise ValueError(f"residual=True needs input_dim == output_dim; got {self.input_dim} and {self.output_dim}")
        if self.input_mixing and not self.residual:
            raise ValueError("input_mixing=True needs residual=True (the mixture is added to the query)")
        if self.input_mixing and self.attention_layout == "prefix":
            raise ValueError("input_mixing=True is not supported with attention_layout='prefix'")
        if self.link_candidates and self.link_candidates >= self.max_context_length:
            raise ValueError(
                f"link_candidates ({self.link_candidates}) must be below max_context_length "
                f"({self.max_context_length}): the conversation needs at least one turn"
            )
        if self.block_type == "llama" and self.llama_config is None:
            raise ValueError("block_type='llama' needs llama_config (the Llama model's config as a dict)")
        return self

    @property
    def head_dim(self) -> int:
        return self.hidden_dim // self.num_heads
