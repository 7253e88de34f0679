"""HotpotQA readers: official JSON (incl. HippoRAG and AMOR variants), HF distractor, IRCoT, ECM evidence.

Documents are paragraphs identified by their Wikipedia title (``id = title``); a paragraph's text
is its sentences, each stripped, joined with single spaces (whitespace collapsed), so the same
paragraph read from different files gets the same text. Gold = the supporting paragraphs.

Format notes:

* **official** (``hipporag_train100.json``, ``amor_*.jsonl``): ``_id``, ``question``, ``context`` as
  ``[title, sentences]`` pairs, ``supporting_facts`` as ``[title, sent_id]`` pairs. AMOR also uses
  ``[title, sent_ids, sentences, retrieved_chunk | null]``; when a gold paragraph is missing from
  ``context`` (AMOR's contexts are retrieved, not the distractor set) its text is taken from that
  element's sentences, else from ``extra_paragraphs`` (the HippoRAG ``_corpus.json`` or a pool of
  the other files); a question whose gold text is found nowhere is skipped and counted.
* **hf** (``rpt_*.jsonl``): ``id``, ``supporting_facts{title[], sent_id[]}``, ``context{title[], sentences[][]}``.
* **ircot** (``ircot_dev500.jsonl``): ``question_id``, ``question_text``, ``contexts[{title,
  paragraph_text, is_supporting}]``; sentences are recovered with a naive splitter.
* **ecm** (``ecm_train_evidence.jsonl``): only gold evidence sentences, no titles, no ids and no
  distractors. It cannot give paragraph-level positives, so it supports only the ``given``
  framing: one pseudo-document per question (``ecm:<hash>``, the evidence sentences joined) as the
  positive. Keep it out of a paragraph retrieval corpus; it is useful as extra (query, evidence)
  training pairs and to guard against train/eval question overlap.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prime_retriever.errors import DataError
from prime_retriever.text.documents import Document
from training.data.examples import (
    GIVEN,
    Dataset,
    Example,
    clean_text,
    join_sentences,
    normalize_question,
    split_sentences,
)
from training.data.jsonio import iter_records, load_json
from training.data.multihop import MultiHopQuestion, Paragraph, build_dataset

FORMATS = ("official", "hf", "ircot", "ecm")


def _sentences(raw: object, where: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(s, str) for s in raw):
        raise DataError(f"{where}: paragraph sentences must be a list of strings")
    return tuple(c for c in (clean_text(s) for s in raw) if c)


def detect_format(record: Mapping[str, Any]) -> str:
    """Which HotpotQA format a record is in (one of :data:`FORMATS`)."""
    if "question_id" in record and "contexts" in record:
        return "ircot"
    if "evidence" in record and "context" not in record:
        return "ecm"
    if isinstance(record.get("context"), dict):
        return "hf"
    if "_id" in record or isinstance(record.get("context"), list):
        return "official"
    raise DataError(f"unrecognised HotpotQA record with keys {sorted(record)}")


def _question(record: Mapping[str, Any], key: str, where: str) -> str:
    q = record.get(key)
    if not isinstance(q, str) or not q.strip():
        raise DataError(f"{where}: missing or empty {key!r}")
    return q.strip()


def _make(qid: str, question: str, paras: dict[str, tuple[str, ...]], gold: list[str],
          where: str) -> MultiHopQuestion:
    gold_ids = tuple(dict.fromkeys(gold))
    if len(gold_ids) < 2:
        raise DataError(f"{where}: question {qid!r} has {len(gold_ids)} supporting paragraph(s), expected 2")
    paragraphs = tuple(Paragraph(id=t, title=t, sentences=s) for t, s in paras.items())
    return MultiHopQuestion(id=qid, question=question, paragraphs=paragraphs, gold_ids=gold_ids)


def parse_official(record: Mapping[str, Any], where: str,
                   extra_paragraphs: Mapping[str, tuple[str, ...]] | None = None) -> MultiHopQuestion | str:
    """Parse an official / HippoRAG / AMOR record; returns the question, or a skip reason string."""
    qid = record.get("_id")
    if not isinstance(qid, str) or not qid:
        raise DataError(f"{where}: missing '_id'")
    question = _question(record, "question", where)
    context = record.get("context")
    sfs = record.get("supporting_facts")
    if not isinstance(context, list) or not isinstance(sfs, list):
        raise DataError(f"{where}: 'context' and 'supporting_facts' must be lists")
    paras: dict[str, tuple[str, ...]] = {}
    for item in context:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
            raise DataError(f"{where}: context items must be [title, sentences]")
        paras.setdefault(item[0], _sentences(item[1], where))
    gold: list[str] = []
    for sf in sfs:
        if not (isinstance(sf, list) and len(sf) >= 2 and isinstance(sf[0], str)):
            raise DataError(f"{where}: supporting_facts items must be [title, sent_id, ...]")
        title = sf[0]
        gold.append(title)
        if title not in paras and len(sf) >= 3 and isinstance(sf[2], list) and sf[2]:
            paras[title] = _sentences(sf[2], where)  # AMOR variant: the gold paragraph's sentences
    for title in dict.fromkeys(gold):
        if title not in paras:
            if extra_paragraphs is not None and title in extra_paragraphs:
                paras[title] = extra_paragraphs[title]
            else:
                return "gold paragraph text not available"
    return _make(qid, question, paras, gold, where)


def parse_hf(record: Mapping[str, Any], where: str) -> MultiHopQuestion:
    """Parse a HF ``hotpot_qa`` distractor record."""
    qid = record.get("id")
    if not isinstance(qid, str) or not qid:
        raise DataError(f"{where}: missing 'id'")
    question = _question(record, "question", where)
    ctx, sf = record.get("context"), record.get("supporting_facts")
    if not isinstance(ctx, dict) or not isinstance(sf, dict):
        raise DataError(f"{where}: 'context' and 'supporting_facts' must be objects")
    titles, sents = ctx.get("title"), ctx.get("sentences")
    if not isinstance(titles, list) or not isinstance(sents, list) or len(titles) != len(sents):
        raise DataError(f"{where}: context.title and context.sentences must be lists of equal length")
    paras: dict[str, tuple[str, ...]] = {}
    for t, s in zip(titles, sents, strict=True):
        if not isinstance(t, str):
            raise DataError(f"{where}: context titles must be strings")
        paras.setdefault(t, _sentences(s, where))
    gold = sf.get("title")
    if not isinstance(gold, list) or not all(isinstance(t, str) for t in gold):
        raise DataError(f"{where}: supporting_facts.title must be a list of strings")
    missing = [t for t in gold if t not in paras]
    if missing:
        raise DataError(f"{where}: supporting titles not in context: {missing}")
    return _make(qid, question, paras, list(gold), where)


def parse_ircot(record: Mapping[str, Any], where: str) -> MultiHopQuestion:
    """Parse an IRCoT record (``question_id``, ``question_text``, ``contexts``)."""
    qid = record.get("question_id")
    if not isinstance(qid, str) or not qid:
        raise DataError(f"{where}: missing 'question_id'")
    question = _question(record, "question_text", where)
    contexts = record.get("contexts")
    if not isinstance(contexts, list):
        raise DataError(f"{where}: 'contexts' must be a list")
    paras: dict[str, tuple[str, ...]] = {}
    gold: list[str] = []
    for c in contexts:
        if not isinstance(c, dict) or not isinstance(c.get("title"), str) \
                or not isinstance(c.get("paragraph_text"), str):
            raise DataError(f"{where}: contexts items need string 'title' and 'paragraph_text'")
        paras.setdefault(c["title"], split_sentences(c["paragraph_text"]))
        if c.get("is_supporting") is True:
            gold.append(c["title"])
    return _make(qid, question, paras, gold, where)


def read_corpus_json(path: str | Path) -> dict[str, tuple[str, ...]]:
    """HippoRAG's ``*_corpus.json``: a dict title → sentences (a list of ``{title, text}`` is also accepted)."""
    data = load_json(path)
    out: dict[str, tuple[str, ...]] = {}
    if isinstance(data, dict):
        for title, sents in data.items():
            out[title] = _sentences(sents, f"{path}[{title!r}]")
    elif isinstance(data, list):
        for i, item in enumerate(data):
            if not isinstance(item, dict) or not isinstance(item.get("title"), str) \
                    or not isinstance(item.get("text"), str):
                raise DataError(f"{path}[{i}]: expected {{title, text}}")
            out.setdefault(item["title"], split_sentences(item["text"]))
    else:
        raise DataError(f"{path}: expected a dict title → sentences")
    return out


def companion_corpus(path: str | Path) -> Path | None:
    """``x.json`` → ``x_corpus.json`` when that file exists."""
    p = Path(path)
    c = p.with_name(p.stem + "_corpus.json")
    return c if c.exists() and c != p else None


@dataclass
class HotpotFile:
    """The parsed content of one HotpotQA file."""

    name: str
    format: str
    questions: list[MultiHopQuestion]
    extra: dict[str, tuple[str, ...]]
    skipped: dict[str, int]


def read_hotpotqa(path: str | Path, *, corpus_path: str | Path | None = None,
                  extra_paragraphs: Mapping[str, tuple[str, ...]] | None = None) -> HotpotFile:
    """Parse a HotpotQA file of any supported paragraph format (not ECM, see :func:`load_ecm`).

    ``corpus_path`` (default: the ``_corpus.json`` next to the file, if any) adds paragraphs to the
    corpus and resolves gold paragraphs missing from a question's context, as does ``extra_paragraphs``.
    """
    p = Path(path)
    cp = Path(corpus_path) if corpus_path is not None else companion_corpus(p)
    extra = read_corpus_json(cp) if cp is not None else {}
    lookup: dict[str, tuple[str, ...]] = {**(extra_paragraphs or {}), **extra}
    questions: list[MultiHopQuestion] = []
    skipped: dict[str, int] = {}
    fmt = ""
    for where, rec in iter_records(p):
        f = detect_format(rec)
        if fmt and f != fmt:
            raise DataError(f"{where}: record format {f!r} differs from the file's {fmt!r}")
        fmt = f
        if f == "ecm":
            raise DataError(f"{p}: ECM evidence files have no paragraphs or titles; use load_ecm() (given framing)")
        q: MultiHopQuestion | str
        if f == "official":
            q = parse_official(rec, where, lookup)
        elif f == "hf":
            q = parse_hf(rec, where)
        else:
            q = parse_ircot(rec, where)
        if isinstance(q, str):
            skipped[q] = skipped.get(q, 0) + 1
        else:
            questions.append(q)
    if not fmt:
        raise DataError(f"{p}: no records")
    return HotpotFile(name=p.name, format=fmt, questions=questions, extra=extra, skipped=skipped)


def _docs(paragraphs: Mapping[str, tuple[str, ...]]) -> list[Document]:
    return [Document(id=t, text=join_sentences(s), title=t) for t, s in paragraphs.items()]


def load_hotpotqa(path: str | Path, framing: str, *, sentence_turns: bool = False,
                  corpus_path: str | Path | None = None,
                  extra_paragraphs: Mapping[str, tuple[str, ...]] | None = None) -> Dataset:
    """One HotpotQA file as a :class:`Dataset` (``first_hop`` or ``multi_hop``); ECM files go to :func:`load_ecm`."""
    p = Path(path)
    if _first_format(p) == "ecm":
        return load_ecm(p, framing)
    hf = read_hotpotqa(p, corpus_path=corpus_path, extra_paragraphs=extra_paragraphs)
    return build_dataset(f"hotpotqa/{hf.name}", hf.questions, framing, sentence_turns=sentence_turns,
                         extra_documents=_docs(hf.extra), skipped=hf.skipped)


def _first_format(path: Path) -> str:
    for _, rec in iter_records(path):
        return detect_format(rec)
    raise DataError(f"{path}: no records")


def dedupe_questions(questions: Iterable[MultiHopQuestion]) -> list[MultiHopQuestion]:
    """Keep the first question per id and per normalised question text."""
    seen_ids: set[str] = set()
    seen_text: set[str] = set()
    out: list[MultiHopQuestion] = []
    for q in questions:
        key = normalize_question(q.question)
        if q.id in seen_ids or key in seen_text:
            continue
        seen_ids.add(q.id)
        seen_text.add(key)
        out.append(q)
    return out


def hotpotqa_files(data_dir: str | Path) -> list[Path]:
    """Every HotpotQA paragraph file under ``<data_dir>/hotpotqa`` (not the corpus or ECM files), sorted."""
    d = Path(data_dir) / "hotpotqa"
    files = sorted(list(d.glob("*.json")) + list(d.glob("*.jsonl")))
    return [f for f in files if not f.name.endswith("_corpus.json") and not f.name.startswith("ecm_")]


def load_hotpotqa_pool(paths: Sequence[str | Path], framing: str, *, sentence_turns: bool = False) -> Dataset:
    """Several HotpotQA files as one dataset: questions deduplicated (id, then text), corpus pooled by title.

    All files are read once to pool paragraphs, so a gold paragraph missing from one file (AMOR)
    is resolved from another file that holds it.
    """
    first = [read_hotpotqa(p) for p in paths]
    pool: dict[str, tuple[str, ...]] = {}
    for hf in first:
        for q in hf.questions:
            for para in q.paragraphs:
                pool.setdefault(para.id, para.sentences)
        for t, s in hf.extra.items():
            pool.setdefault(t, s)
    files = [read_hotpotqa(p, extra_paragraphs=pool) if hf.skipped else hf for p, hf in zip(paths, first, strict=True)]
    questions = dedupe_questions(q for hf in files for q in hf.questions)
    skipped: dict[str, int] = {}
    for hf in files:
        for reason, n in hf.skipped.items():
            skipped[f"{hf.name}: {reason}"] = skipped.get(f"{hf.name}: {reason}", 0) + n
    return build_dataset("hotpotqa", questions, framing, sentence_turns=sentence_turns,
                         extra_documents=_docs(pool), skipped=skipped)


def _ecm_id(question: str) -> str:
    return "ecm:" + hashlib.sha256(normalize_question(question).encode("utf-8")).hexdigest()[:16]


def load_ecm(path: str | Path, framing: str = GIVEN) -> Dataset:
    """ECM gold-evidence file as ``given`` (query → its evidence pseudo-document) pairs; see the module doc.

    Raises :class:`DataError` for ``first_hop`` / ``multi_hop``: without titles the evidence
    cannot be mapped to paragraphs.
    """
    p = Path(path)
    if framing != GIVEN:
        raise DataError(f"{p}: ECM evidence has no paragraph titles, so only the 'given' framing is supported, "
                        f"not {framing!r}")
    examples: list[Example] = []
    corpus: dict[str, Document] = {}
    skipped: dict[str, int] = {}
    for where, rec in iter_records(p):
        question = _question(rec, "question", where)
        evidence = rec.get("evidence")
        if not isinstance(evidence, list) or not evidence or not all(isinstance(s, str) for s in evidence):
            raise DataError(f"{where}: 'evidence' must be a non-empty list of strings")
        eid = _ecm_id(question)
        if eid in corpus:  # the first record of a question wins; the rest are counted
            skipped["duplicate question"] = skipped.get("duplicate question", 0) + 1
            continue
        corpus[eid] = Document(id=eid, text=join_sentences(evidence))
        examples.append(Example(id=eid, context=(question,), query=question, positive_ids=(eid,),
                                framing=GIVEN, source=f"hotpotqa/{p.name}", group_id=eid))
    return Dataset(name=f"hotpotqa/{p.name}", examples=examples, corpus=corpus, skipped=skipped)
