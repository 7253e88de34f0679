"""Format detection and the one entry point :func:`load_dataset`.

Supported inputs (detected from the path and the first record):

* a directory holding ``collection.tsv`` → MS MARCO (``queries.dev.tsv`` + ``qrels.dev.tsv``; ``split`` option);
* ``*.csv.zip`` / ``*.csv`` with Doc2Dial columns → Doc2Dial;
* a zip of LoCoMo conversation JSON files → LoCoMo;
* a directory holding ``knowledge.json`` + ``val_logs.json``, or a ``<split>_logs.json`` → DSTC11 Track 5;
* ``open_retrieval_sharc_*.json`` (JSON Lines beside ``id2snippet.json``) → OR-ShARC;
* ``*.jsonl.gz`` NQ-open oracle records → NQ-open;
* a generic examples JSONL (``positive_ids`` key) → generic (corpus: ``corpus_path`` option, default
  the sibling file ``<stem>.corpus.jsonl`` or ``corpus.jsonl``);
* MuSiQue JSON (``question_decomposition``) → MuSiQue;
* HotpotQA official / AMOR / HF / IRCoT / ECM → HotpotQA.

Data lives outside the repository: :func:`data_dir` reads ``PRIME_DATA_DIR`` (default
``<repo root>/../shared/data``).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

from prime_retriever.errors import DataError
from prime_retriever.text.jsonl import iter_jsonl
from training.data.doc2dial import load_doc2dial
from training.data.dstc11 import load_dstc11
from training.data.examples import FRAMINGS, Dataset
from training.data.generic import read_generic
from training.data.hotpotqa import detect_format, load_hotpotqa
from training.data.jsonio import iter_records
from training.data.locomo import load_locomo
from training.data.msmarco import load_msmarco_dir
from training.data.musique import load_musique
from training.data.nq_open import load_nq_open
from training.data.orsharc import is_orsharc_name, load_orsharc

FORMAT_NAMES = ("msmarco", "doc2dial", "locomo", "dstc11", "orsharc", "nq_open", "generic", "musique", "hotpotqa")
GIVEN_ONLY = ("msmarco", "doc2dial", "locomo", "dstc11", "orsharc", "nq_open")


def data_dir() -> Path:
    """The shared data directory: ``$PRIME_DATA_DIR`` or ``<repo root>/../shared/data``."""
    env = os.environ.get("PRIME_DATA_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _first_record(path: Path) -> dict[str, Any]:
    for _, rec in (iter_records(path) if path.suffix == ".json" else
                   ((str(n), r) for n, r in iter_jsonl(path))):
        return rec
    raise DataError(f"{path}: no records")


def detect(path: str | Path) -> str:
    """The format name (one of :data:`FORMAT_NAMES`) of ``path``."""
    p = Path(path)
    if p.is_dir():
        if (p / "collection.tsv").exists():
            return "msmarco"
        if (p / "knowledge.json").exists() and (p / "val_logs.json").exists():
            return "dstc11"
        raise DataError(f"{p}: a directory is only supported for MS MARCO (collection.tsv) and DSTC11 "
                        "(knowledge.json + val_logs.json)")
    if not p.exists():
        raise DataError(f"{p}: no such file")
    name = p.name.lower()
    if name.endswith("_logs.json") and (p.parent / "knowledge.json").exists():
        return "dstc11"
    if is_orsharc_name(p):
        return "orsharc"
    if name.endswith(".csv") or name.endswith(".csv.zip"):
        return "doc2dial"
    if name.endswith(".zip"):
        try:
            with zipfile.ZipFile(p) as zf:
                names = zf.namelist()
        except (OSError, zipfile.BadZipFile) as exc:
            raise DataError(f"{p}: cannot read as a zip: {exc}") from exc
        if any(n.endswith(".json") for n in names):
            return "locomo"
        raise DataError(f"{p}: unrecognised zip")
    rec = _first_record(p)
    if "positive_ids" in rec:
        return "generic"
    if "ctxs" in rec and "question" in rec:
        return "nq_open"
    if "question_decomposition" in rec or "paragraphs" in rec:
        return "musique"
    detect_format(rec)  # raises DataError for anything unknown
    return "hotpotqa"


def _generic_corpus(p: Path) -> Path:
    for cand in (p.with_name(p.name.replace(".jsonl", ".corpus.jsonl")), p.with_name("corpus.jsonl")):
        if cand.exists() and cand != p:
            return cand
    raise DataError(f"{p}: generic examples need a corpus file (pass corpus_path)")


def load_dataset(path: str | Path, framing: str, *, sentence_turns: bool = False,
                 corpus_path: str | Path | None = None, split: str = "dev") -> Dataset:
    """Load any supported dataset under ``framing`` (``first_hop``, ``multi_hop`` or ``given``).

    ``sentence_turns`` applies to multi_hop HotpotQA/MuSiQue, ``corpus_path`` to HotpotQA
    (HippoRAG corpus), MuSiQue, OR-ShARC (the snippet file) and generic files, ``split`` to MS MARCO. A
    framing the dataset cannot express raises :class:`DataError`.
    """
    if framing not in FRAMINGS:
        raise DataError(f"unknown framing {framing!r} (expected one of {FRAMINGS})")
    p = Path(path)
    fmt = detect(p)
    if fmt in GIVEN_ONLY and framing != "given":
        raise DataError(f"{p}: {fmt} supports only the 'given' framing, not {framing!r}")
    if fmt == "msmarco":
        return load_msmarco_dir(p, split)
    if fmt == "doc2dial":
        return load_doc2dial(p)
    if fmt == "locomo":
        return load_locomo(p)
    if fmt == "dstc11":
        return load_dstc11(p)
    if fmt == "orsharc":
        return load_orsharc(p, snippets_path=corpus_path)
    if fmt == "nq_open":
        return load_nq_open(p)
    if fmt == "generic":
        return read_generic(p, corpus_path or _generic_corpus(p), framing=framing)
    if fmt == "musique":
        return load_musique(p, framing, sentence_turns=sentence_turns, corpus_path=corpus_path)
    return load_hotpotqa(p, framing, sentence_turns=sentence_turns, corpus_path=corpus_path)
