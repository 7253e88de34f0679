"""NQ-open with oracle passages (``nq-open-oracle.jsonl.gz``, lost-in-the-middle release).

Framing ``given``: context = [question], query = question, positive = the gold ctx (``isgold``);
other ctxs of the record, if any, are negatives. Corpus = every ctx, id ``<title>#<sha256(text)[:12]>``.
Example id = ``nq:<sha256(normalised question)[:16]>`` (the file has no ids).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from prime_retriever.errors import DataError
from prime_retriever.text.documents import Document
from prime_retriever.text.jsonl import iter_jsonl
from training.data.examples import GIVEN, Dataset, Example, clean_text, normalize_question


def _sha(text: str, n: int) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:n]


def load_nq_open(path: str | Path, framing: str = GIVEN) -> Dataset:
    """The NQ-open oracle file as a :class:`Dataset`; duplicate questions keep their first record."""
    p = Path(path)
    if framing != GIVEN:
        raise DataError(f"{p}: NQ-open supports only the 'given' framing, not {framing!r}")
    corpus: dict[str, Document] = {}
    examples: list[Example] = []
    seen: set[str] = set()
    skipped: dict[str, int] = {}
    for n, rec in iter_jsonl(p):
        where = f"{p}:{n}"
        question, ctxs = rec.get("question"), rec.get("ctxs")
        if not isinstance(question, str) or not question.strip() or not isinstance(ctxs, list):
            raise DataError(f"{where}: expected a string 'question' and a 'ctxs' list")
        pos: list[str] = []
        neg: list[str] = []
        for c in ctxs:
            if not isinstance(c, dict) or not isinstance(c.get("title"), str) or not isinstance(c.get("text"), str):
                raise DataError(f"{where}: ctxs items need string 'title' and 'text'")
            text = clean_text(c["text"])
            doc_id = f"{c['title']}#{_sha(text, 12)}"
            corpus.setdefault(doc_id, Document(id=doc_id, text=text, title=c["title"]))
            (pos if c.get("isgold") is True else neg).append(doc_id)
        ex_id = "nq:" + _sha(normalize_question(question), 16)
        if not pos:
            skipped["no gold ctx"] = skipped.get("no gold ctx", 0) + 1
            continue
        if ex_id in seen:
            skipped["duplicate question"] = skipped.get("duplicate question", 0) + 1
            continue
        seen.add(ex_id)
        examples.append(Example(id=ex_id, context=(question.strip(),), query=question.strip(),
                                positive_ids=tuple(dict.fromkeys(pos)), negative_ids=tuple(dict.fromkeys(neg)),
                                framing=GIVEN, source=f"nq_open/{p.name}", group_id=ex_id))
    return Dataset(name=f"nq_open/{p.name}", examples=examples, corpus=corpus, skipped=skipped)
