"""DSTC11 Track 5 (knowledge-grounded task-oriented dialogue) as a conversational retrieval dataset.

Files, in one directory: ``<split>_logs.json`` (a list of dialogue contexts, each a list of
``{speaker: "U"|"S", text}`` turns, oldest first, the last one the user turn to answer),
``<split>_labels.json`` (one ``{target, knowledge?, response?}`` per context) and ``knowledge.json``
(``domain -> entity_id -> {name, reviews: {doc_id: {sentences: {sent_id: text}}}, faqs: {doc_id:
{question, answer}}}``). Only the validation split is shipped.

Documents: one per review sentence (id ``dstc11:<domain>:<entity>:review:<doc>:<sent>``) and one
per FAQ (id ``dstc11:<domain>:<entity>:faq:<doc>``, text ``"<question> <answer>"``); the title is
the entity's name, so a snippet is encoded as ``"<name>: <text>"``: the snippets of one hotel are
otherwise indistinguishable from another's.

Framing ``given``: context = the earlier turns, each ``"user: …"`` / ``"system: …"`` (``[query]``
when there is none); query = the last user turn; positives = the gold snippets of
``knowledge``. A context whose label is ``target: false`` needs no knowledge and is skipped
(counted). Example ids are ``dstc11:<split>:<index>``; group_id = ``dstc11:`` + the dialogue's
opening user turn: contexts cut from one dialogue share it, so a split by group keeps a dialogue
on one side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prime_retriever.errors import DataError
from prime_retriever.text.documents import Document
from training.data.examples import GIVEN, Dataset, Example, clean_text, normalize_question
from training.data.jsonio import load_json

__all__ = ["dstc11_files", "load_dstc11", "read_knowledge"]

_ROLE = {"U": "user", "S": "system"}


def dstc11_files(path: str | Path) -> tuple[Path, Path, Path]:
    """``(logs, labels, knowledge)`` for a DSTC11 directory or its ``<split>_logs.json``."""
    p = Path(path)
    logs = p / "val_logs.json" if p.is_dir() else p
    if not logs.name.endswith("_logs.json"):
        raise DataError(f"{p}: expected a DSTC11 directory or a <split>_logs.json file")
    labels = logs.with_name(logs.name.replace("_logs.json", "_labels.json"))
    knowledge = logs.with_name("knowledge.json")
    for f in (logs, labels, knowledge):
        if not f.is_file():
            raise DataError(f"{f}: no such file (DSTC11 needs the logs, the labels and knowledge.json)")
    return logs, labels, knowledge


def _obj(value: Any, where: str, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DataError(f"{where}: {what} must be a JSON object, got {type(value).__name__}")
    return value


def _text(value: Any, where: str, what: str) -> str:
    if not isinstance(value, str):
        raise DataError(f"{where}: {what} must be a string, got {type(value).__name__}")
    return clean_text(value)


def read_knowledge(path: Path) -> dict[str, Document]:
    """Every review sentence and FAQ of ``knowledge.json`` as a :class:`Document`, keyed by id."""
    corpus: dict[str, Document] = {}
    for domain, entities in _obj(load_json(path), str(path), "the knowledge base").items():
        for eid, ent in _obj(entities, f"{path}: {domain}", "a domain").items():
            where = f"{path}: {domain}/{eid}"
            ent = _obj(ent, where, "an entity")
            name = _text(ent.get("name", ""), where, "'name'")
            for did, review in _obj(ent.get("reviews", {}), where, "'reviews'").items():
                sentences = _obj(_obj(review, f"{where}/review {did}", "a review").get("sentences", {}),
                                 f"{where}/review {did}", "'sentences'")
                for sid, sent in sentences.items():
                    doc_id = f"dstc11:{domain}:{eid}:review:{did}:{sid}"
                    corpus[doc_id] = Document(id=doc_id, title=name,
                                              text=_text(sent, f"{where}/review {did}/{sid}", "a sentence"))
            for did, faq in _obj(ent.get("faqs", {}), where, "'faqs'").items():
                fw = f"{where}/faq {did}"
                faq = _obj(faq, fw, "a FAQ")
                doc_id = f"dstc11:{domain}:{eid}:faq:{did}"
                text = f"{_text(faq.get('question'), fw, 'question')} {_text(faq.get('answer'), fw, 'answer')}"
                corpus[doc_id] = Document(id=doc_id, title=name, text=text.strip())
    return corpus


def _snippet_id(k: Any, where: str) -> str:
    k = _obj(k, where, "a knowledge entry")
    try:
        base = f"dstc11:{k['domain']}:{k['entity_id']}"
        if k["doc_type"] == "faq":
            return f"{base}:faq:{k['doc_id']}"
        if k["doc_type"] == "review":
            return f"{base}:review:{k['doc_id']}:{k['sent_id']}"
    except KeyError as exc:
        raise DataError(f"{where}: a knowledge entry lacks {exc.args[0]!r}") from exc
    raise DataError(f"{where}: unknown doc_type {k['doc_type']!r} (expected 'review' or 'faq')")


def load_dstc11(path: str | Path, framing: str = GIVEN) -> Dataset:
    """DSTC11 Track 5 as a :class:`Dataset` (framing ``given`` only); see the module doc."""
    logs_path, labels_path, knowledge_path = dstc11_files(path)
    if framing != GIVEN:
        raise DataError(f"{logs_path}: DSTC11 supports only the 'given' framing, not {framing!r}")
    split = logs_path.name.removesuffix("_logs.json")
    logs, labels = load_json(logs_path), load_json(labels_path)
    if not isinstance(logs, list) or not isinstance(labels, list):
        raise DataError(f"{logs_path}: logs and labels must both be JSON lists")
    if len(logs) != len(labels):
        raise DataError(f"{labels_path}: {len(labels)} labels for {len(logs)} dialogue contexts in {logs_path}")
    corpus = read_knowledge(knowledge_path)
    examples: list[Example] = []
    skipped: dict[str, int] = {}
    for i, (log, label) in enumerate(zip(logs, labels, strict=True)):
        where, lwhere = f"{logs_path}[{i}]", f"{labels_path}[{i}]"
        label = _obj(label, lwhere, "a label")
        if not isinstance(label.get("target"), bool):
            raise DataError(f"{lwhere}: 'target' must be true or false")
        if not label["target"]:
            skipped["no knowledge needed (target: false)"] = skipped.get("no knowledge needed (target: false)", 0) + 1
            continue
        if not isinstance(log, list) or not log:
            raise DataError(f"{where}: a dialogue context must be a non-empty list of turns")
        turns: list[tuple[str, str]] = []
        for t in log:
            t = _obj(t, where, "a turn")
            role = _ROLE.get(t.get("speaker", ""))
            if role is None:
                raise DataError(f"{where}: a turn's speaker must be 'U' or 'S', got {t.get('speaker')!r}")
            turns.append((role, _text(t.get("text"), where, "a turn's 'text'")))
        role, query = turns[-1]
        if role != "user":
            raise DataError(f"{where}: the last turn is not a user turn")
        knowledge = label.get("knowledge")
        if not isinstance(knowledge, list) or not knowledge:
            raise DataError(f"{lwhere}: a target turn needs a non-empty 'knowledge' list")
        positives = tuple(dict.fromkeys(_snippet_id(k, lwhere) for k in knowledge))
        missing = [s for s in positives if s not in corpus]
        if missing:
            raise DataError(f"{lwhere}: gold snippets not in {knowledge_path}: {missing[:3]}")
        context = tuple(f"{r}: {t}" for r, t in turns[:-1]) or (query,)
        examples.append(Example(id=f"dstc11:{split}:{i}", context=context, query=query, positive_ids=positives,
                                framing=GIVEN, source=f"dstc11/{logs_path.name}",
                                group_id=f"dstc11:{normalize_question(turns[0][1])}"))
    return Dataset(name=f"dstc11/{logs_path.name}", examples=examples, corpus=corpus, skipped=skipped)
