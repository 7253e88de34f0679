"""The training example and the dataset container shared by every reader.

An :class:`Example` is one prediction task: given the conversation so far (``context``, oldest turn
first) and the user's ``query``, predict the embedding of the ideal document, one of
``positive_ids``. A :class:`Dataset` bundles examples with the corpus their ids refer to.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prime_retriever.documents import Document
from prime_retriever.errors import DataError

FIRST_HOP = "first_hop"
MULTI_HOP = "multi_hop"
GIVEN = "given"
FRAMINGS: tuple[str, ...] = (FIRST_HOP, MULTI_HOP, GIVEN)


@dataclass(frozen=True)
class Example:
    """One (context, query) → ideal-document example.

    ``framing`` is ``first_hop`` (find any gold document from the question alone), ``multi_hop``
    (one gold paragraph is already in the context, find the next) or ``given`` (the dataset's
    own conversational framing). ``group_id`` ties together examples that must land on the same
    side of a train/eval split (one question, one dialogue); it defaults to ``id``.
    ``exclude_ids`` are documents to drop from the candidates at evaluation (the paragraph that is
    already in the context for ``multi_hop``). ``scope``, when set, restricts the search to the
    documents of that scope (:attr:`Document.scope`: LoCoMo searches the question's own conversation).
    """

    id: str
    context: tuple[str, ...]
    query: str
    positive_ids: tuple[str, ...]
    negative_ids: tuple[str, ...] = ()
    framing: str = GIVEN
    source: str = ""
    group_id: str = ""
    exclude_ids: tuple[str, ...] = ()
    scope: str = ""

    def __post_init__(self) -> None:
        if not self.id:
            raise DataError("Example.id must be a non-empty string")
        if self.framing not in FRAMINGS:
            raise DataError(f"example {self.id!r}: unknown framing {self.framing!r} (expected one of {FRAMINGS})")
        if not self.positive_ids:
            raise DataError(f"example {self.id!r}: it has no positive_ids")
        if not self.group_id:
            object.__setattr__(self, "group_id", self.id)
        # Accept lists from callers but always store tuples, so the dataclass stays hashable.
        for name in ("context", "positive_ids", "negative_ids", "exclude_ids"):
            value = getattr(self, name)
            if not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))

    @property
    def turns(self) -> tuple[str, ...]:
        """The context turns followed by the query: everything the X-Encoder sees."""
        return (*self.context, self.query)


@dataclass
class Dataset:
    """A named list of examples plus the corpus (doc id → :class:`Document`) their ids refer to.

    ``skipped`` counts the records a reader dropped, by reason (e.g. a gold paragraph whose text
    the file does not hold), so that nothing is lost silently.
    """

    name: str
    examples: list[Example]
    corpus: dict[str, Document]
    skipped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.examples)

    def validate(self) -> None:
        """Raise :class:`DataError` if an example names a positive, negative or excluded id missing from the corpus."""
        for ex in self.examples:
            for kind, ids in (("positive", ex.positive_ids), ("negative", ex.negative_ids),
                              ("excluded", ex.exclude_ids)):
                missing = [i for i in ids if i not in self.corpus]
                if missing:
                    raise DataError(f"dataset {self.name!r}, example {ex.id!r}: "
                                    f"{kind} ids not in the corpus: {missing[:5]}")


def add_document(corpus: dict[str, Document], doc: Document) -> None:
    """Insert ``doc``; a document with the same id already there wins (first occurrence is kept)."""
    corpus.setdefault(doc.id, doc)


def merge_datasets(name: str, datasets: Iterable[Dataset]) -> Dataset:
    """Concatenate examples and pool corpora (first occurrence of an id wins)."""
    examples: list[Example] = []
    corpus: dict[str, Document] = {}
    skipped: dict[str, int] = {}
    for ds in datasets:
        examples.extend(ds.examples)
        for doc in ds.corpus.values():
            add_document(corpus, doc)
        for reason, n in ds.skipped.items():
            skipped[f"{ds.name}: {reason}"] = skipped.get(f"{ds.name}: {reason}", 0) + n
    return Dataset(name=name, examples=examples, corpus=corpus, skipped=skipped)


_WS = re.compile(r"\s+")
_PUNCT = re.compile(r"[^\w\s]", re.UNICODE)


def clean_text(text: str) -> str:
    """Collapse every whitespace run to one space and strip: the one text normalisation of documents."""
    return _WS.sub(" ", text).strip()


def join_sentences(sentences: Iterable[str]) -> str:
    """Join sentences with single spaces (each stripped), collapsing inner whitespace."""
    return clean_text(" ".join(s.strip() for s in sentences if s.strip()))


def normalize_question(text: str) -> str:
    """Key for duplicate detection: NFKC, lowercase, punctuation removed, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = _PUNCT.sub(" ", text)
    return _WS.sub(" ", text).strip()


_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+(?=[A-Z0-9\"'(\[])")


def split_sentences(text: str) -> tuple[str, ...]:
    """Naive sentence splitter for paragraphs shipped without sentence boundaries."""
    parts = [p.strip() for p in _SENTENCE_END.split(clean_text(text))]
    return tuple(p for p in parts if p)


def require(record: Mapping[str, object], key: str, kind: type | tuple[type, ...], where: str) -> object:
    """Fetch ``record[key]`` and check its type, raising a :class:`DataError` that says where."""
    if key not in record:
        raise DataError(f"{where}: missing key {key!r}")
    value = record[key]
    if not isinstance(value, kind):
        raise DataError(f"{where}: key {key!r} has type {type(value).__name__}, expected {kind}")
    return value
