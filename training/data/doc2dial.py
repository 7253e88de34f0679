"""Doc2Dial (reading-comprehension CSV form) as a conversational retrieval dataset.

File: a zip whose single member is a plain CSV (despite its ``.csv.zip`` name). Columns ``id``
(``<dialogue id>_<turn index>``), ``question`` (the dialogue history, tab-separated
``user:``/``agent:`` turns), ``context`` (the document), ``answers`` and ``spans`` (Python
literal dicts), ``domain``, ``title`` (document id).

Verified on the shipped file (contrary to its README): the history is stored **newest turn
first** (the current user turn is the first field, the dialogue's opening turn the last), so the
reader reverses it.

Framing ``given``: context = the earlier turns, oldest first, each as ``"user: …"`` /
``"agent: …"`` (``[query]`` when there is none); query = the current user turn (no role prefix);
positives = the passage(s) holding the grounding spans.

Passages: each document's spans (in id order) are grouped greedily into passages of consecutive
spans: a passage closes before a span that would take it past ``max_words`` (default 180) words,
or before a span that opens a new section (starts with a newline, i.e. a heading) once it holds
at least ``min_words`` (default 60) words. This gives ~60–180-word passages that respect the
document's structure. Ids are ``<document title>#p<k>``; ``Document.title`` is the document title
without its ``#section`` suffix.
"""

from __future__ import annotations

import ast
import csv
import io
import sys
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from prime_retriever.errors import DataError
from prime_retriever.text.documents import Document
from training.data.examples import GIVEN, Dataset, Example, clean_text

DEFAULT_MIN_WORDS = 60
DEFAULT_MAX_WORDS = 180


def iter_rows(path: str | Path) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(line, row)`` from the CSV (plain, or inside a zip with one member)."""
    p = Path(path)
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        if zipfile.is_zipfile(p):
            with zipfile.ZipFile(p) as zf:
                members = [n for n in zf.namelist() if not n.endswith("/")]
                if len(members) != 1:
                    raise DataError(f"{p}: expected exactly one member, found {members}")
                with zf.open(members[0]) as raw:
                    yield from _read_csv(io.TextIOWrapper(raw, encoding="utf-8", newline=""), p)
        else:
            with open(p, encoding="utf-8", newline="") as fh:
                yield from _read_csv(fh, p)
    except UnicodeDecodeError as exc:
        raise DataError(f"{p}: not UTF-8 text ({exc.reason})") from exc
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"{p}: cannot read: {exc}") from exc


def _read_csv(fh: io.TextIOBase | io.TextIOWrapper, p: Path) -> Iterator[tuple[int, dict[str, str]]]:
    reader = csv.DictReader(fh)
    need = {"id", "question", "answers", "spans", "title"}
    if reader.fieldnames is None or not need <= set(reader.fieldnames):
        raise DataError(f"{p}: missing columns {sorted(need - set(reader.fieldnames or []))}")
    for row in reader:
        yield reader.line_num, row


def _literal_dict(text: str, where: str, column: str) -> dict[str, object]:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:  # TypeError: {[1]: 2}
        raise DataError(f"{where}: column {column!r} is not a Python literal dict") from exc
    if not isinstance(value, dict):
        raise DataError(f"{where}: column {column!r} is not a dict")
    return value


def cut_passages(spans: Mapping[str, str], *, min_words: int = DEFAULT_MIN_WORDS,
                 max_words: int = DEFAULT_MAX_WORDS) -> list[tuple[tuple[str, ...], str]]:
    """Group consecutive spans (sorted by numeric id) into passages: ``[(span ids, text), ...]``."""
    out: list[tuple[tuple[str, ...], str]] = []
    cur_ids: list[str] = []
    cur_text: list[str] = []
    words = 0
    for sid in sorted(spans, key=lambda s: (int(s) if s.isdigit() else sys.maxsize, s)):
        text = spans[sid]
        w = len(text.split())
        heading = text.lstrip(" ").startswith("\n")
        if cur_ids and (words + w > max_words or (heading and words >= min_words)):
            out.append((tuple(cur_ids), clean_text("".join(cur_text))))
            cur_ids, cur_text, words = [], [], 0
        cur_ids.append(sid)
        cur_text.append(text)
        words += w
    if cur_ids:
        out.append((tuple(cur_ids), clean_text("".join(cur_text))))
    return out


def _turn(raw: str) -> tuple[str, str]:
    role, sep, text = raw.partition(":")
    if not sep or role.strip() not in ("user", "agent"):
        return "", clean_text(raw)
    return role.strip(), clean_text(text)


def load_doc2dial(path: str | Path, framing: str = GIVEN, *, min_words: int = DEFAULT_MIN_WORDS,
                  max_words: int = DEFAULT_MAX_WORDS) -> Dataset:
    """Doc2Dial RC CSV as a :class:`Dataset` (framing ``given`` only); see the module doc."""
    p = Path(path)
    if framing != GIVEN:
        raise DataError(f"{p}: Doc2Dial supports only the 'given' framing, not {framing!r}")
    corpus: dict[str, Document] = {}
    span_to_passage: dict[str, dict[str, str]] = {}
    examples: list[Example] = []
    skipped: dict[str, int] = {}
    for line, row in iter_rows(p):
        where = f"{p}:{line}"
        doc_title = row["title"]
        if doc_title not in span_to_passage:
            spans = _literal_dict(row["spans"], where, "spans")
            if not all(isinstance(v, str) for v in spans.values()):
                raise DataError(f"{where}: spans values must be strings")
            mapping: dict[str, str] = {}
            for k, (ids, text) in enumerate(cut_passages({str(s): str(t) for s, t in spans.items()},
                                                         min_words=min_words, max_words=max_words)):
                pid = f"{doc_title}#p{k}"
                corpus[pid] = Document(id=pid, text=text, title=doc_title.split("#")[0].strip())
                mapping.update(dict.fromkeys(ids, pid))
            span_to_passage[doc_title] = mapping
        answers = _literal_dict(row["answers"], where, "answers")
        grounding = answers.get("spans")
        if not isinstance(grounding, dict) or not grounding:
            skipped["no grounding span"] = skipped.get("no grounding span", 0) + 1
            continue
        mapping = span_to_passage[doc_title]
        missing = [s for s in grounding if str(s) not in mapping]
        if missing:
            raise DataError(f"{where}: grounding span ids {missing} not in the document's spans")
        positives = tuple(dict.fromkeys(mapping[str(s)] for s in grounding))
        turns = [_turn(t) for t in row["question"].split("\t") if t.strip()]
        if not turns:
            raise DataError(f"{where}: empty dialogue history")
        turns.reverse()  # stored newest first; see the module doc
        role, query = turns[-1]
        if role != "user":
            raise DataError(f"{where}: the current turn is not a user turn")
        context = tuple(f"{r}: {t}" if r else t for r, t in turns[:-1]) or (query,)
        ex_id = row["id"]
        examples.append(Example(id=ex_id, context=context, query=query, positive_ids=positives,
                                framing=GIVEN, source=f"doc2dial/{p.name}", group_id=ex_id.rsplit("_", 1)[0]))
    return Dataset(name=f"doc2dial/{p.name}", examples=examples, corpus=corpus, skipped=skipped)
