"""The training example and the dataset container shared by every reader.

An :class:`Example` is one prediction task: given the conversation so far (``context``, oldest turn
first) and the user's ``query``, predict the embedding of the ideal document, one of
``positive_ids``. A :class:`Dataset` bundles examples with the corpus their ids refer to.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from prime_retriever.errors import DataError
from prime_retriever.text.documents import Document

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
        if not isinstance(self.id, str) or not self.id:
            raise DataError("Example.id must be a non-empty string")
        if not isinstance(self.query, str):
            raise DataError(f"example {self.id!r}: query must be a string, got {type(self.query).__name__}")
        if self.framing not in FRAMINGS:
            raise DataError(f"example {self.id!r}: unknown framing {self.framing!r} (expected one of {FRAMINGS})")
        if not self.group_id:
            object.__setattr__(self, "group_id", self.id)
        # Accept lists from callers but always store tuples of strings, so the dataclass stays hashable.
        # A bare string is refused: tuple("abc") would silently make one turn (or id) per character.
        for name in ("context", "positive_ids", "negative_ids", "exclude_ids"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
                raise DataError(f"example {self.id!r}: {name} must be a sequence of strings, "
                                f"got {type(value).__name__}")
            value = tuple(value)
            if not all(isinstance(v, str) for v in value):
                raise DataError(f"example {self.id!r}: every element of {name} must be a string")
            object.__setattr__(self, name, value)
        if not self.positive_ids:
            raise DataError(f"example {self.id!r}: it has no positive_ids")

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


def pool_documents(corpus: dict[str, Document], documents: Mapping[str, Document], source: str) -> dict[str, str]:
    """Add ``documents`` (one source's corpus) to ``corpus`` in place; return the ids it had to rename.

    A document already in ``corpus`` under the same id is kept once. A *different* document under
    an id ``corpus`` already holds (HotpotQA and MuSiQue both key paragraphs by bare Wikipedia title,
    with different texts for some titles) is added as ``id@source`` (``id@source#k`` if that is
    taken too), so neither source's text is lost and no example is scored against the wrong text.
    Apply the returned ``{old id: new id}`` to the source's examples with :func:`rename_documents`.
    """
    renames: dict[str, str] = {}
    for doc in documents.values():
        have = corpus.get(doc.id)
        if have is None:
            corpus[doc.id] = doc
        elif have != doc:
            new_id, k = f"{doc.id}@{source}", 0
            while new_id in corpus or new_id in documents:
                k += 1
                new_id = f"{doc.id}@{source}#{k}"
            corpus[new_id] = replace(doc, id=new_id)
            renames[doc.id] = new_id
    return renames


def rename_documents(examples: Iterable[Example], renames: Mapping[str, str]) -> list[Example]:
    """``examples`` with every positive, negative and excluded id in ``renames`` replaced by its new id."""
    if not renames:
        return list(examples)

    def ids(values: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(renames.get(v, v) for v in values)

    return [replace(ex, positive_ids=ids(ex.positive_ids), negative_ids=ids(ex.negative_ids),
                    exclude_ids=ids(ex.exclude_ids)) for ex in examples]


def merge_datasets(name: str, datasets: Iterable[Dataset]) -> Dataset:
    """Concatenate examples and pool corpora (see :func:`pool_documents` for ids that clash)."""
    examples: list[Example] = []
    corpus: dict[str, Document] = {}
    skipped: dict[str, int] = {}
    for ds in datasets:
        renames = pool_documents(corpus, ds.corpus, ds.name)
        examples.extend(rename_documents(ds.examples, renames))
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


def question_key(ex: Example) -> str:
    """The normalised text that identifies ``ex``'s question, for duplicate and leak detection.

    For ``first_hop`` and ``multi_hop`` it is the query. A ``given`` (conversational) example is
    identified by its whole conversation: a short turn such as "yes" or "thanks" recurs across
    unrelated dialogues and is not, alone, a shared question. A context that is only the query
    repeated (NQ-open, LoCoMo, ECM) counts once, so those keys are the query's own.
    """
    if ex.framing != GIVEN:
        return normalize_question(ex.query)
    turns = [normalize_question(t) for t in ex.turns]
    if len(turns) == 2 and turns[0] == turns[1]:
        turns = turns[1:]
    return " ".join(turns)


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
