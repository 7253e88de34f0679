"""Framings shared by the multi-hop QA readers (HotpotQA, MuSiQue).

Readers turn their file format into :class:`MultiHopQuestion` records (a question, its candidate
paragraphs, its gold paragraph ids), and :func:`build_examples` turns those into :class:`Example`
objects under the ``first_hop`` or ``multi_hop`` framing:

* ``first_hop``: context = [question], query = question, positives = every gold paragraph,
  negatives = the question's other (distractor / retrieved) paragraphs.
* ``multi_hop``: context = [question, text of one gold paragraph], query = question, positive =
  the next gold paragraph, ``exclude_ids`` = the given paragraph. For unordered gold sets
  (HotpotQA: 2 paragraphs) every ordered pair is emitted (``<qid>#mh0``, ``<qid>#mh1``); for
  ordered chains (MuSiQue's decomposition) hop *i* → hop *i+1*. With ``sentence_turns`` the
  given paragraph becomes one turn per sentence.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from prime_retriever.errors import DataError
from prime_retriever.text.documents import Document
from training.data.examples import FIRST_HOP, MULTI_HOP, Dataset, Example, add_document


@dataclass(frozen=True)
class Paragraph:
    """A candidate paragraph: its corpus id, title and sentences."""

    id: str
    title: str
    sentences: tuple[str, ...]

    @property
    def text(self) -> str:
        """Sentences joined with single spaces."""
        return " ".join(self.sentences)

    def document(self) -> Document:
        """The corpus :class:`Document` of this paragraph."""
        return Document(id=self.id, text=self.text, title=self.title)


@dataclass(frozen=True)
class MultiHopQuestion:
    """A question with its candidate paragraphs and gold paragraph ids.

    ``gold_ids`` are in hop order when ``ordered_chain`` is true (MuSiQue); otherwise their order
    carries no meaning (HotpotQA). Every gold id must be among ``paragraphs``.
    """

    id: str
    question: str
    paragraphs: tuple[Paragraph, ...]
    gold_ids: tuple[str, ...]
    ordered_chain: bool = False

    def paragraph(self, pid: str) -> Paragraph:
        """The paragraph with id ``pid``."""
        for p in self.paragraphs:
            if p.id == pid:
                return p
        raise DataError(f"question {self.id!r}: no paragraph {pid!r}")


def hop_pairs(q: MultiHopQuestion) -> list[tuple[str, str]]:
    """(given, target) gold-id pairs of the multi_hop framing."""
    gold = q.gold_ids
    if q.ordered_chain:
        return [(gold[i], gold[i + 1]) for i in range(len(gold) - 1)]
    return [(a, b) for a in gold for b in gold if a != b]


def build_examples(
    questions: Iterable[MultiHopQuestion],
    framing: str,
    *,
    source: str,
    sentence_turns: bool = False,
) -> list[Example]:
    """Examples of ``framing`` (``first_hop`` or ``multi_hop``) for ``questions``; see the module doc."""
    out: list[Example] = []
    for q in questions:
        negatives = tuple(dict.fromkeys(p.id for p in q.paragraphs if p.id not in q.gold_ids))
        if framing == FIRST_HOP:
            out.append(Example(id=q.id, context=(q.question,), query=q.question, positive_ids=q.gold_ids,
                               negative_ids=negatives, framing=FIRST_HOP, source=source, group_id=q.id))
        elif framing == MULTI_HOP:
            for k, (given, target) in enumerate(hop_pairs(q)):
                para = q.paragraph(given)
                turns = para.sentences if sentence_turns else (para.text,)
                out.append(Example(id=f"{q.id}#mh{k}", context=(q.question, *turns), query=q.question,
                                   positive_ids=(target,), negative_ids=negatives, framing=MULTI_HOP,
                                   source=source, group_id=q.id, exclude_ids=(given,)))
        else:
            raise DataError(f"{source}: framing {framing!r} is not supported here (use first_hop or multi_hop)")
    return out


def build_dataset(
    name: str,
    questions: list[MultiHopQuestion],
    framing: str,
    *,
    sentence_turns: bool = False,
    extra_documents: Iterable[Document] = (),
    skipped: dict[str, int] | None = None,
) -> Dataset:
    """A :class:`Dataset`: examples of ``framing`` and a corpus of every paragraph seen (plus ``extra_documents``)."""
    corpus: dict[str, Document] = {}
    for q in questions:
        for p in q.paragraphs:
            add_document(corpus, p.document())
    for doc in extra_documents:
        add_document(corpus, doc)
    examples = build_examples(questions, framing, source=name, sentence_turns=sentence_turns)
    return Dataset(name=name, examples=examples, corpus=corpus, skipped=dict(skipped or {}))
