"""What the benchmark trains and evaluates on: train examples, eval examples per framing, one corpus.

Two ways to build a suite:

* :func:`shipped_suite`: the shipped data (``$PRIME_DATA_DIR``): HotpotQA (all files pooled),
  MuSiQue and Doc2Dial, each split by a hash of its questions (a dialogue's, for Doc2Dial) into
  disjoint train and eval sides. Eval framings: ``first_hop`` and ``multi_hop`` (HotpotQA + MuSiQue
  questions) and ``given`` (Doc2Dial dialogues, and LoCoMo's conversational-memory questions: a
  dataset the training never sees, evaluated only). NQ-open is extra supervision, trained on only:
  as an eval it is saturated (searching its own 2,588 passages, the query embedding's MRR is 0.95).
  With ``unseen="musique"`` MuSiQue is the dataset never trained on, and LoCoMo is split by
  conversation.
* :func:`files_suite`: user files (``--train``/``--eval``/``--corpus``), in any supported format;
  generic JSONL examples are evaluated as given, in the framing ``given``.

The corpus is the union of every paragraph or passage the train and eval files carry, deduplicated
by id (the title for HotpotQA), plus extra generic corpus files. A different text under an id the
corpus already holds (MuSiQue and HotpotQA both key paragraphs by title) is kept as its own
document, ``id@source`` (:func:`training.data.examples.pool_documents`). Every suite is checked
with :func:`training.data.assert_disjoint`: no eval question is a train question, by id, group or
normalised text (a conversational example's whole conversation).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from prime_retriever.errors import DataError
from prime_retriever.text.documents import Document
from training.data import (
    FIRST_HOP,
    GIVEN,
    MULTI_HOP,
    Dataset,
    Example,
    assert_disjoint,
    detect,
    hotpotqa_files,
    load_dataset,
    load_hotpotqa_pool,
    merge_datasets,
    read_corpus,
    split_examples,
)
from training.data.examples import pool_documents, rename_documents
from training.data.generic import read_examples
from training.data.splits import bucket

MULTI_HOP_FORMATS = ("hotpotqa", "musique")
UNSEEN_CHOICES = ("locomo", "musique", None)  # shipped_suite's dataset the training never sees
SPLIT_SALT = "prime-bench-v1"


@dataclass
class BenchSuite:
    """Train examples, eval examples by framing, and the corpus they all search."""

    train: list[Example]
    eval: dict[str, list[Example]]
    corpus: dict[str, Document]
    sources: dict[str, dict[str, int]] = field(default_factory=dict)  # dataset -> {"train": n, "eval": n}
    eval_dataset: dict[str, str] = field(default_factory=dict)  # eval example id -> dataset name
    eval_only_docs: frozenset[str] = frozenset()  # documents only eval-only (unseen) datasets carry

    @property
    def train_corpus(self) -> dict[str, Document]:
        """What training may see: the corpus without the unseen datasets' documents (not even as negatives)."""
        return {i: d for i, d in self.corpus.items() if i not in self.eval_only_docs}

    @property
    def unseen(self) -> list[str]:
        """Datasets evaluated on but never trained on."""
        return sorted(n for n, c in self.sources.items() if c.get("eval", 0) and not c.get("train", 0))

    @property
    def n_eval(self) -> int:
        return sum(len(v) for v in self.eval.values())

    def check(self) -> None:
        """Refuse leaks between train and eval, and ids missing from the corpus."""
        assert_disjoint(self.train, [ex for exs in self.eval.values() for ex in exs])
        for ex in [*self.train, *(e for exs in self.eval.values() for e in exs)]:
            missing = [i for i in (*ex.positive_ids, *ex.exclude_ids) if i not in self.corpus]
            if missing:
                raise DataError(f"example {ex.id!r} names documents missing from the corpus: {missing[:3]}")


def _framings_of(path: Path) -> tuple[str, ...]:
    fmt = detect(path)
    return (FIRST_HOP, MULTI_HOP) if fmt in MULTI_HOP_FORMATS else (GIVEN,)


def _limit_groups(examples: Sequence[Example], limit: int | None, salt: str) -> list[Example]:
    """Keep the examples of the first ``limit`` groups in hash order (deterministic, unbiased)."""
    if limit is None:
        return list(examples)
    groups = sorted({ex.group_id for ex in examples}, key=lambda g: bucket(g, salt + ":limit"))
    keep = set(groups[:limit])
    return [ex for ex in examples if ex.group_id in keep]


_TURN = re.compile(r"^(.+):D\d+:\d+$")


def _family(doc_id: str) -> str:
    """Passages cut from one document share a family (``<doc>#p<k>``), as do the turns of one LoCoMo
    conversation (``<conv>:D<session>:<turn>``); a paragraph is its own."""
    if m := _TURN.match(doc_id):
        return m.group(1)
    return doc_id.rsplit("#p", 1)[0] if "#p" in doc_id else doc_id


def _carried_corpus(examples: Iterable[Example], corpus: dict[str, Document]) -> dict[str, Document]:
    """The documents a set of examples carries: golds, distractors, and their family (sibling passages,
    the rest of a conversation: a LoCoMo question searches its whole conversation)."""
    ids: set[str] = set()
    for ex in examples:
        ids.update(ex.positive_ids, ex.negative_ids, ex.exclude_ids)
    families = {_family(i) for i in ids}
    return {i: d for i, d in corpus.items() if i in ids or _family(i) in families}


def _split(examples: list[Example], eval_fraction: float) -> tuple[list[Example], list[Example]]:
    return split_examples(examples, eval_fraction, salt=SPLIT_SALT)


def shipped_suite(
    data_dir: Path,
    *,
    limit: int | None = None,
    eval_fraction: float = 0.35,
    max_given_eval: int | None = 600,
    sentence_turns: bool = False,
    unseen: str | None = "locomo",
    nq_open: bool = True,
) -> BenchSuite:
    """HotpotQA + MuSiQue + Doc2Dial from the shipped data, split into disjoint train/eval sides.

    With ``nq_open``, every NQ-open question is a training example (train only: none is evaluated) and
    its passages join the corpus. ``unseen`` names the dataset the training never sees (eval only, its
    documents not even negatives): ``"locomo"`` (the default: LoCoMo joins the ``given`` framing) or
    ``"musique"``. With ``"musique"``, LoCoMo is trained on too, split by conversation (the loader's
    groups): a held-out question searches a conversation no training question came from (and
    ``limit`` counts conversations). Where LoCoMo is eval only, ``limit`` counts its questions.
    ``None`` leaves LoCoMo out and evaluates no unseen dataset.
    """
    if unseen not in UNSEEN_CHOICES:
        raise DataError(f"unseen must be one of {UNSEEN_CHOICES}, got {unseen!r}")
    hotpot = [
        load_hotpotqa_pool(hotpotqa_files(data_dir), f, sentence_turns=sentence_turns) for f in (FIRST_HOP, MULTI_HOP)
    ]
    musique_path = data_dir / "musique" / "hipporag_train100.json"
    musique = [load_dataset(musique_path, f, sentence_turns=sentence_turns) for f in (FIRST_HOP, MULTI_HOP)]
    doc2dial = load_dataset(data_dir / "doc2dial" / "doc2dial_rc_val.csv.zip", GIVEN)
    named: list[tuple[str, Sequence[Dataset]]] = [("hotpotqa", hotpot), ("musique", musique), ("doc2dial", [doc2dial])]
    train_only: tuple[str, ...] = ()
    if nq_open:
        named.append(("nq_open", [load_dataset(data_dir / "nq_open" / "nq-open-oracle.jsonl.gz", GIVEN)]))
        train_only = ("nq_open",)
    if unseen is not None:
        locomo = load_dataset(data_dir / "locomo" / "locomo10.zip", GIVEN)
        if unseen == "locomo":  # eval only: no split to keep conversations whole, so --limit counts questions
            locomo.examples[:] = [replace(ex, group_id=ex.id) for ex in locomo.examples]
        named.append(("locomo", [locomo]))
    eval_only = (unseen,) if unseen is not None else ()
    return _assemble(
        named,
        eval_only=eval_only,
        train_only=train_only,
        limit=limit,
        eval_fraction=eval_fraction,
        max_given_eval=max_given_eval,
    )


def _assemble(
    named: Sequence[tuple[str, Sequence[Dataset]]],
    *,
    eval_only: Sequence[str] = (),
    train_only: Sequence[str] = (),
    limit: int | None,
    eval_fraction: float,
    max_given_eval: int | None,
) -> BenchSuite:
    train: list[Example] = []
    evals: dict[str, list[Example]] = {}
    corpus: dict[str, Document] = {}
    sources: dict[str, dict[str, int]] = {}
    eval_dataset: dict[str, str] = {}
    unseen_docs: set[str] = set()
    for name, datasets in named:
        merged = merge_datasets(name, datasets)
        examples = _limit_groups(merged.examples, limit, name)
        part = merged.corpus if limit is None else _carried_corpus(examples, merged.corpus)
        before = set(corpus)
        examples = rename_documents(examples, pool_documents(corpus, part, name))
        if name in eval_only:
            unseen_docs.update(set(corpus) - before)
            tr, ev = [], examples
        elif name in train_only:
            tr, ev = examples, []
        else:
            tr, ev = _split(examples, eval_fraction)
        given = [ex for ex in ev if ex.framing == GIVEN]
        if max_given_eval is not None and len(given) > max_given_eval:
            keep = {ex.id for ex in sorted(given, key=lambda e: bucket(e.id, "given-cap"))[:max_given_eval]}
            ev = [ex for ex in ev if ex.framing != GIVEN or ex.id in keep]
        train += tr
        for ex in ev:
            evals.setdefault(ex.framing, []).append(ex)
            eval_dataset[ex.id] = name
        sources[name] = {"train": len(tr), "eval": len(ev)}
    suite = BenchSuite(train=train, eval=evals, corpus=corpus, sources=sources, eval_dataset=eval_dataset,
                       eval_only_docs=frozenset(unseen_docs))
    suite.check()
    return suite


def files_suite(
    train_files: Sequence[Path],
    eval_files: Sequence[Path],
    corpus_files: Sequence[Path] = (),
    *,
    framings: Sequence[str] | None = None,
    limit: int | None = None,
) -> BenchSuite:
    """A suite from user files: every train file in every framing it supports, eval files in ``framings``.

    The ``corpus_files`` are read first: a generic examples file is read against them when there are
    any (without them, against the ``corpus.jsonl`` beside it, as :func:`load_dataset` does).
    """
    train: list[Example] = []
    evals: dict[str, list[Example]] = {}
    given: dict[str, Document] = {}
    for path in corpus_files:
        pool_documents(given, read_corpus(path), path.name)
    corpus: dict[str, Document] = dict(given)
    sources: dict[str, dict[str, int]] = {}
    eval_dataset: dict[str, str] = {}
    for role, files in (("train", train_files), ("eval", eval_files)):
        for path in files:
            for framing in _framings_of(path):
                if role == "eval" and framings is not None and framing not in framings:
                    continue
                if given and detect(path) == "generic":
                    ds = Dataset(path.stem, read_examples(path, given, framing=framing, source=path.stem), given)
                else:
                    ds = load_dataset(path, framing)
                renames = pool_documents(corpus, ds.corpus, path.name)
                examples = rename_documents(_limit_groups(ds.examples, limit, str(path)), renames)
                if role == "train":
                    train += examples
                else:
                    evals.setdefault(framing, []).extend(examples)
                    eval_dataset.update((ex.id, path.name) for ex in examples)
                sources.setdefault(path.name, {}).setdefault(role, 0)
                sources[path.name][role] += len(examples)
    if not evals:
        raise DataError("no evaluation examples: check --eval and --framing")
    suite = BenchSuite(train=train, eval=evals, corpus=corpus, sources=sources, eval_dataset=eval_dataset)
    suite.check()
    return suite


def msmarco_suite(directory: Path, *, limit: int | None = None, eval_fraction: float = 0.35) -> BenchSuite:
    """MS MARCO passage ranking from its official files (``collection.tsv``, ``queries.*.tsv``, qrels).

    With ``queries.train.tsv`` + ``qrels.train.tsv`` present, train on them and evaluate on the dev
    split; otherwise the dev split is divided by query hash into train and eval. The corpus is the
    whole collection (MS MARCO's 8.8M passages need a Qdrant server, not the embedded store).
    """
    from training.data import load_msmarco_dir

    dev = load_msmarco_dir(directory, "dev")
    if (directory / "queries.train.tsv").is_file() and (directory / "qrels.train.tsv").is_file():
        train_ds = load_msmarco_dir(directory, "train")
        train = _limit_groups(train_ds.examples, limit, "msmarco-train")
        evals = _limit_groups(dev.examples, limit, "msmarco-dev")
    else:
        train, evals = _split(_limit_groups(dev.examples, limit, "msmarco-dev"), eval_fraction)
    suite = BenchSuite(
        train=train,
        eval={GIVEN: evals},
        corpus=dict(dev.corpus),
        sources={"msmarco": {"train": len(train), "eval": len(evals)}},
        eval_dataset={ex.id: "msmarco" for ex in evals},
    )
    suite.check()
    return suite


def assemble_suite(
    named: Sequence[tuple[str, Sequence[Dataset]]],
    *,
    eval_only: Sequence[str] = (),
    train_only: Sequence[str] = (),
    limit: int | None = None,
    eval_fraction: float = 0.35,
    max_given_eval: int | None = 600,
) -> BenchSuite:
    """A suite from named, already loaded datasets: ``eval_only`` ones evaluated only (their documents not even
    negatives), ``train_only`` ones trained on whole, the rest split by group (the leave-one-out protocol's builder)."""
    return _assemble(named, eval_only=eval_only, train_only=train_only, limit=limit, eval_fraction=eval_fraction,
                     max_given_eval=max_given_eval)
