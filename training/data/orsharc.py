"""OR-ShARC (open-retrieval conversational machine reading) as a conversational retrieval dataset.

Files: JSON Lines ``open_retrieval_sharc_<split>.json`` (despite the ``.json`` name, one object a
line: ``{utterance_id, tree_id, question, scenario, history: [{follow_up_question,
follow_up_answer}], gold_snippet_id, ...}``) and, beside them, ``id2snippet.json`` (snippet id ->
rule text: the corpus, 651 UK-government rule snippets).

Framing ``given``: context = the user's scenario (when not empty) followed by one turn per
follow-up exchange, ``"system: <question> user: <answer>"``, oldest first (``[query]`` when there
is neither); query = ``question``; the one positive = ``gold_snippet_id``. ``evidence`` (the
follow-up answers the scenario implies, an annotation the user never said) is not used. Documents
are ``orsharc:<snippet id>``, untitled. Example ids are ``orsharc:<utterance_id>``; group_id =
``orsharc:<tree_id>``: the questions about one rule text stay on one side of a split.
"""

from __future__ import annotations

from pathlib import Path

from prime_retriever.errors import DataError
from prime_retriever.text.documents import Document
from prime_retriever.text.jsonl import iter_jsonl
from training.data.examples import GIVEN, Dataset, Example, clean_text
from training.data.jsonio import load_json

__all__ = ["is_orsharc_name", "load_orsharc", "read_snippets"]

SNIPPETS = "id2snippet.json"


def is_orsharc_name(path: Path) -> bool:
    """Whether ``path`` is named like an OR-ShARC questions file."""
    return path.name.startswith("open_retrieval_sharc") and path.suffix in (".json", ".jsonl")


def read_snippets(path: Path) -> dict[str, Document]:
    """``id2snippet.json`` as documents ``orsharc:<id>``."""
    data = load_json(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object snippet id -> text, got {type(data).__name__}")
    corpus: dict[str, Document] = {}
    for sid, text in data.items():
        if not isinstance(text, str):
            raise DataError(f"{path}: snippet {sid!r} must be a string, got {type(text).__name__}")
        corpus[f"orsharc:{sid}"] = Document(id=f"orsharc:{sid}", text=clean_text(text))
    return corpus


def _str(rec: dict[str, object], key: str, where: str) -> str:
    value = rec.get(key)
    if not isinstance(value, str):
        raise DataError(f"{where}: key {key!r} must be a string, got {type(value).__name__}")
    return value


def load_orsharc(path: str | Path, framing: str = GIVEN, *, snippets_path: str | Path | None = None) -> Dataset:
    """One OR-ShARC questions file as a :class:`Dataset` (framing ``given`` only); see the module doc."""
    p = Path(path)
    if framing != GIVEN:
        raise DataError(f"{p}: OR-ShARC supports only the 'given' framing, not {framing!r}")
    snip = Path(snippets_path) if snippets_path is not None else p.with_name(SNIPPETS)
    if not snip.is_file():
        raise DataError(f"{snip}: no such file (OR-ShARC questions need their snippet file)")
    corpus = read_snippets(snip)
    examples: list[Example] = []
    seen: set[str] = set()
    skipped: dict[str, int] = {}
    for line, rec in iter_jsonl(p):
        where = f"{p}:{line}"
        uid = _str(rec, "utterance_id", where)
        if uid in seen:
            skipped["repeated utterance_id"] = skipped.get("repeated utterance_id", 0) + 1
            continue
        seen.add(uid)
        gold = rec.get("gold_snippet_id")
        if not isinstance(gold, (str, int)) or isinstance(gold, bool):
            raise DataError(f"{where}: 'gold_snippet_id' must be a string, got {type(gold).__name__}")
        gold_id = f"orsharc:{gold}"
        if gold_id not in corpus:
            raise DataError(f"{where}: gold snippet {gold!r} is not in {snip}")
        history = rec.get("history", [])
        if not isinstance(history, list):
            raise DataError(f"{where}: 'history' must be a list, got {type(history).__name__}")
        context: list[str] = []
        scenario = clean_text(_str(rec, "scenario", where)) if rec.get("scenario") is not None else ""
        if scenario:
            context.append(f"user: {scenario}")
        for h in history:
            if not isinstance(h, dict):
                raise DataError(f"{where}: every 'history' entry must be an object")
            fq = clean_text(_str(h, "follow_up_question", where))
            fa = clean_text(_str(h, "follow_up_answer", where))
            context.append(f"system: {fq} user: {fa}")
        query = clean_text(_str(rec, "question", where))
        if not query:
            raise DataError(f"{where}: empty 'question'")
        tree = _str(rec, "tree_id", where)
        examples.append(Example(id=f"orsharc:{uid}", context=tuple(context) or (query,), query=query,
                                positive_ids=(gold_id,), framing=GIVEN, source=f"orsharc/{p.name}",
                                group_id=f"orsharc:{tree}"))
    return Dataset(name=f"orsharc/{p.name}", examples=examples, corpus=corpus, skipped=skipped)
