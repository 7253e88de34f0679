"""``prime-retriever predict --checkpoint CKPT``: PredictorInput JSON on stdin -> PredictorOutput JSON."""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from prime_retriever.model.checkpoint import load_checkpoint
from prime_retriever.model.schemas import PredictorInput, PredictorOutput
from prime_retriever.retrieval.requests import unit_rows


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory")


def run_cli(args: argparse.Namespace) -> int:
    model = load_checkpoint(args.checkpoint).model
    cfg = model.config
    data = PredictorInput.model_validate_json(
        sys.stdin.read(), context={"dim": cfg.input_dim, "max_turns": cfg.max_context_length}
    )
    # the API's check of input vectors (search, prepare): unit rows, refused when all-zero; a value near
    # float32's limit is normalised in float64 rather than overflowing inside the predictor
    ctx = unit_rows(np.asarray(data.context_embeddings, dtype=np.float64), cfg.input_dim, "context_embeddings")
    q = unit_rows(np.asarray(data.query_embedding, dtype=np.float64), cfg.input_dim, "query_embedding")
    context = torch.from_numpy(ctx[None])  # 1 × N × D
    query = torch.from_numpy(q[None])  # 1 × D
    with torch.inference_mode():
        emb, conf = model.predict_with_confidence(context, query)
    out = PredictorOutput.model_validate(
        {"predicted_embedding": emb[0].tolist(), "confidence": float(conf[0])}, context={"dim": cfg.output_dim}
    )
    sys.stdout.write(out.model_dump_json() + "\n")
    return 0
