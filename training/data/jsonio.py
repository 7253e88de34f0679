"""Reading JSON / JSON-lines files with errors that name the file and line.

``iter_jsonl`` lives in the runtime package (:mod:`prime_retriever.text.jsonl`), which reads corpora too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prime_retriever.errors import DataError
from prime_retriever.text.jsonl import iter_jsonl, refuse_surrogates_in_text


def load_json(path: str | Path) -> Any:
    """Load a whole JSON file, raising :class:`DataError` on unreadable or invalid files."""
    p = Path(path)
    try:
        with open(p, encoding="utf-8") as fh:
            text = fh.read()
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{p}:{exc.lineno}: invalid JSON: {exc.msg}") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{p}: not UTF-8 text ({exc.reason})") from exc
    except RecursionError as exc:
        raise DataError(f"{p}: JSON nested too deeply") from exc
    except OSError as exc:
        raise DataError(f"{p}: cannot read: {exc}") from exc
    refuse_surrogates_in_text(text, data, str(p))
    return data


def iter_records(path: str | Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(where, record)`` from a JSON list (``.json``) or JSONL file; ``where`` = ``file:line``/``file[i]``."""
    p = Path(path)
    if p.suffix == ".json":
        data = load_json(p)
        if not isinstance(data, list):
            raise DataError(f"{p}: expected a JSON list of records, got {type(data).__name__}")
        for i, obj in enumerate(data):
            if not isinstance(obj, dict):
                raise DataError(f"{p}[{i}]: expected a JSON object, got {type(obj).__name__}")
            yield f"{p}[{i}]", obj
    else:
        for n, obj in iter_jsonl(p):
            yield f"{p}:{n}", obj
