"""The dataset layer of ``training``: readers, the generic format, splits, collation and pre-encoding.

Entry points: :func:`load_dataset` (any supported file, any framing it can express),
:func:`split_examples` / :func:`assert_disjoint`, :func:`collate`, :class:`EncodedCorpus` /
:class:`EncodedExamples`. Data is read from :func:`data_dir` (``$PRIME_DATA_DIR``).
"""

from __future__ import annotations

from training.data.collate import CollatedBatch, collate
from training.data.doc2dial import load_doc2dial
from training.data.encoded import EncodedCorpus, EncodedExamples, ExampleRows, TextEncoderLike
from training.data.examples import (
    FIRST_HOP,
    FRAMINGS,
    GIVEN,
    MULTI_HOP,
    Dataset,
    Example,
    merge_datasets,
    normalize_question,
)
from training.data.generic import read_corpus, read_examples, read_generic, write_corpus, write_examples, write_generic
from training.data.hotpotqa import hotpotqa_files, load_ecm, load_hotpotqa, load_hotpotqa_pool, read_hotpotqa
from training.data.locomo import load_locomo
from training.data.msmarco import load_msmarco, load_msmarco_dir
from training.data.musique import load_musique
from training.data.nq_open import load_nq_open
from training.data.registry import data_dir, detect, load_dataset
from training.data.splits import assert_disjoint, dedupe_examples, split_examples

__all__ = [
    "FIRST_HOP",
    "FRAMINGS",
    "GIVEN",
    "MULTI_HOP",
    "CollatedBatch",
    "Dataset",
    "EncodedCorpus",
    "EncodedExamples",
    "Example",
    "ExampleRows",
    "TextEncoderLike",
    "assert_disjoint",
    "collate",
    "data_dir",
    "dedupe_examples",
    "detect",
    "hotpotqa_files",
    "load_dataset",
    "load_doc2dial",
    "load_ecm",
    "load_hotpotqa",
    "load_hotpotqa_pool",
    "load_locomo",
    "load_msmarco",
    "load_msmarco_dir",
    "load_musique",
    "load_nq_open",
    "merge_datasets",
    "normalize_question",
    "read_corpus",
    "read_examples",
    "read_generic",
    "read_hotpotqa",
    "split_examples",
    "write_corpus",
    "write_examples",
    "write_generic",
]
