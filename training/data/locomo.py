"""LoCoMo (``locomo10.zip``): long-term conversational memory retrieval.

Each zip member ``<n>.json`` is one conversation (``conv`` = file stem). Documents are the
conversation's turns, id ``<conv>:<dia_id>``, text = the turn's text (plus ``[image: caption]``
when the turn shares a photo), title = the speaker. Examples (framing ``given``): context =
[question] (the questions are asked after the conversation, not inside it), query = question,
positives = the evidence turns. Evidence ids are repaired where the file mangles them
(``"D9:1 D4:4"``, ``"D8:6; D9:17"``, ``"D:11:26"``, ``"D30:05"``); ids that still name no turn are
dropped, and a question left without evidence is skipped (counted). A question searches its own
conversation only: every turn and every question carries ``scope = <conv>`` (a conversation is one
user's memory), and the benchmark restricts the search with :func:`~prime_retriever.scope_filter`.
Example ids are ``locomo:<conv>:q<k>``; group_id = ``locomo:<conv>``: the questions of one
conversation search the same memory, so a split by group (train/eval, the trainer's validation)
keeps a conversation on one side.
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path, PurePosixPath

from prime_retriever.errors import DataError
from prime_retriever.text.documents import Document
from prime_retriever.text.jsonl import refuse_surrogates_in_text
from training.data.examples import GIVEN, Dataset, Example, clean_text

_SESSION = re.compile(r"session_\d+")
_DIA = re.compile(r"D:?(\d+):(\d+)")


def _evidence_ids(raw: object) -> list[str]:
    items = raw if isinstance(raw, list) else [raw]
    out: list[str] = []
    for item in items:
        if isinstance(item, str):
            out.extend(f"D{int(a)}:{int(b)}" for a, b in _DIA.findall(item))
    return out


def load_locomo(path: str | Path, framing: str = GIVEN) -> Dataset:
    """The LoCoMo zip as a :class:`Dataset`; see the module doc."""
    p = Path(path)
    if framing != GIVEN:
        raise DataError(f"{p}: LoCoMo supports only the 'given' framing, not {framing!r}")
    corpus: dict[str, Document] = {}
    examples: list[Example] = []
    skipped: dict[str, int] = {}
    try:
        zf = zipfile.ZipFile(p)
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"{p}: cannot read: {exc}") from exc
    with zf:
        for member in sorted(n for n in zf.namelist() if n.endswith(".json")):
            where = f"{p}!{member}"
            conv = PurePosixPath(member).stem
            try:
                text = zf.read(member).decode("utf-8")
                data = json.loads(text)
            except UnicodeDecodeError as exc:
                raise DataError(f"{where}: not UTF-8 text ({exc.reason})") from exc
            except json.JSONDecodeError as exc:
                raise DataError(f"{where}:{exc.lineno}: invalid JSON: {exc.msg}") from exc
            refuse_surrogates_in_text(text, data, where)
            if not isinstance(data, dict) or not isinstance(data.get("qa"), list):
                raise DataError(f"{where}: expected a conversation object with a 'qa' list")
            turn_ids: dict[str, str] = {}
            for key, turns in data.items():
                if not _SESSION.fullmatch(key):
                    continue
                if not isinstance(turns, list):
                    raise DataError(f"{where}: {key} must be a list of turns")
                for t in turns:
                    if not isinstance(t, dict) or not isinstance(t.get("dia_id"), str) \
                            or not isinstance(t.get("text"), str):
                        raise DataError(f"{where}: {key} turns need string 'dia_id' and 'text'")
                    text = clean_text(t["text"])
                    if isinstance(t.get("blip_caption"), str):
                        text = f"{text} [image: {clean_text(t['blip_caption'])}]"
                    m = _DIA.fullmatch(t["dia_id"])
                    norm = f"D{int(m.group(1))}:{int(m.group(2))}" if m else t["dia_id"]
                    doc_id = f"{conv}:{norm}"
                    turn_ids[norm] = doc_id
                    corpus[doc_id] = Document(id=doc_id, text=text, title=str(t.get("speaker", "")), scope=conv)
            for k, qa in enumerate(data["qa"]):
                if not isinstance(qa, dict) or not isinstance(qa.get("question"), str):
                    raise DataError(f"{where}: qa[{k}] needs a string 'question'")
                positives = tuple(dict.fromkeys(turn_ids[e] for e in _evidence_ids(qa.get("evidence"))
                                                if e in turn_ids))
                if not positives:
                    skipped["no valid evidence turn"] = skipped.get("no valid evidence turn", 0) + 1
                    continue
                q = clean_text(qa["question"])
                ex_id = f"locomo:{conv}:q{k}"
                examples.append(Example(id=ex_id, context=(q,), query=q, positive_ids=positives, framing=GIVEN,
                                        source=f"locomo/{p.name}", group_id=f"locomo:{conv}", scope=conv))
    return Dataset(name=f"locomo/{p.name}", examples=examples, corpus=corpus, skipped=skipped)
