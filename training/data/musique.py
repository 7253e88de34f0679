"""MuSiQue (HippoRAG's ``hipporag_train100.json`` + ``_corpus.json``) as multi-hop retrieval data.

Paragraph ids are titles, made unique deterministically: titles recur with different texts, so
the first distinct text of a title (corpus file order, then question order) keeps ``title`` and
the k-th further distinct text gets ``title#k``. Framings (see :mod:`training.data.multihop`):
``first_hop`` positives = every supporting paragraph; ``multi_hop`` follows the decomposition
chain (hop *i* given → hop *i+1* positive), ordered by ``question_decomposition[].paragraph_support_idx``,
falling back to the supporting paragraphs in listing order when the indices are missing or do not
point at distinct supporting paragraphs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prime_retriever.errors import DataError
from prime_retriever.text.documents import Document
from training.data.examples import Dataset, clean_text, split_sentences
from training.data.hotpotqa import companion_corpus
from training.data.jsonio import iter_records, load_json
from training.data.multihop import MultiHopQuestion, Paragraph, build_dataset


class _Ids:
    """Deterministic unique ids for (title, text) pairs."""

    def __init__(self) -> None:
        self.by_pair: dict[tuple[str, str], str] = {}
        self.count: dict[str, int] = {}

    def get(self, title: str, text: str) -> str:
        key = (title, text)
        if key not in self.by_pair:
            k = self.count.get(title, 0)
            self.by_pair[key] = title if k == 0 else f"{title}#{k}"
            self.count[title] = k + 1
        return self.by_pair[key]


def _chain(rec: dict[str, Any], supporting: list[int], where: str) -> list[int]:
    decomposition = rec.get("question_decomposition")
    if isinstance(decomposition, list):
        idx = [d.get("paragraph_support_idx") for d in decomposition if isinstance(d, dict)]
        if (len(idx) == len(decomposition) and all(isinstance(i, int) for i in idx)
                and len(set(idx)) == len(idx) and set(idx) <= set(supporting)):
            return [i for i in idx if isinstance(i, int)]
    return supporting


def load_musique(path: str | Path, framing: str, *, sentence_turns: bool = False,
                 corpus_path: str | Path | None = None) -> Dataset:
    """A MuSiQue file (and its ``_corpus.json``, if present) as a :class:`Dataset`."""
    p = Path(path)
    ids = _Ids()
    extra: list[Document] = []
    cp = Path(corpus_path) if corpus_path is not None else companion_corpus(p)
    if cp is not None:
        data = load_json(cp)
        if not isinstance(data, list):
            raise DataError(f"{cp}: expected a list of {{title, text}}")
        for i, item in enumerate(data):
            if not isinstance(item, dict) or not isinstance(item.get("title"), str) \
                    or not isinstance(item.get("text"), str):
                raise DataError(f"{cp}[{i}]: expected {{title, text}} strings")
            text = clean_text(item["text"])
            extra.append(Document(id=ids.get(item["title"], text), text=text, title=item["title"]))
    questions: list[MultiHopQuestion] = []
    skipped: dict[str, int] = {}
    for where, rec in iter_records(p):
        qid, question, paragraphs = rec.get("id"), rec.get("question"), rec.get("paragraphs")
        if not isinstance(qid, str) or not isinstance(question, str) or not isinstance(paragraphs, list):
            raise DataError(f"{where}: expected string 'id', 'question' and a 'paragraphs' list")
        paras: dict[int, Paragraph] = {}
        supporting: list[int] = []
        for para in paragraphs:
            if not isinstance(para, dict) or not isinstance(para.get("idx"), int) \
                    or not isinstance(para.get("title"), str) or not isinstance(para.get("paragraph_text"), str):
                raise DataError(f"{where}: paragraphs need int 'idx', string 'title' and 'paragraph_text'")
            text = clean_text(para["paragraph_text"])
            pid = ids.get(para["title"], text)
            paras[para["idx"]] = Paragraph(id=pid, title=para["title"], sentences=split_sentences(text) or (text,))
            if para.get("is_supporting") is True:
                supporting.append(para["idx"])
        chain = _chain(rec, supporting, where)
        gold = tuple(dict.fromkeys(paras[i].id for i in chain))
        if len(gold) < 2:
            skipped["fewer than 2 distinct supporting paragraphs"] = skipped.get(
                "fewer than 2 distinct supporting paragraphs", 0) + 1
            continue
        questions.append(MultiHopQuestion(id=qid, question=question.strip(), paragraphs=tuple(paras.values()),
                                          gold_ids=gold, ordered_chain=True))
    return build_dataset(f"musique/{p.name}", questions, framing, sentence_turns=sentence_turns,
                         extra_documents=extra, skipped=skipped)
