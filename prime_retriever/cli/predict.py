"""``prime-retriever predict --checkpoint CKPT``: PredictorInput JSON on stdin -> PredictorOutput JSON."""

from __future__ import annotations

import argparse
import sys

import torch

from prime_retriever.model.checkpoint import load_checkpoint
from prime_retriever.model.schemas import PredictorInput, PredictorOutput


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory")


def run_cli(args: argparse.Namespace) -> int:
    model = load_checkpoint(args.checkpoint).model
    cfg = model.config
    data = PredictorInput.model_validate_json(
        sys.stdin.read(), context={"dim": cfg.input_dim, "max_turns": cfg.max_context_length}
    )
    context = torch.tensor([data.context_embeddings], dtype=torch.float32)  # 1 × N × D
    query = torch.tensor([data.query_embedding], dtype=torch.float32)  # 1 × D
    with torch.inference_mode():
        emb, conf = model.predict_with_confidence(context, query)
    out = PredictorOutput.model_validate(
        {"predicted_embedding": emb[0].tolist(), "confidence": float(conf[0])}, context={"dim": cfg.output_dim}
    )
    sys.stdout.write(out.model_dump_json() + "\n")
    return 0
