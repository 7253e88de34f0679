"""Reading JSON-lines files, with errors that name the file and the line.

A strict UTF-8 decoder cannot yield a lone surrogate, but a JSON escape can (``"\\ud800"``): such a
string is not valid Unicode, and the text encoder would fail on it far from the file. Every reader
refuses it here, naming the file, the line and the field.
"""

from __future__ import annotations

import gzip
import json
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prime_retriever.errors import DataError

__all__ = ["iter_jsonl", "refuse_surrogates", "refuse_surrogates_in_text", "surrogate_path"]

# a \uD800-\uDFFF escape: the only way a surrogate enters a string decoded from strict UTF-8
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _is_unicode(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def surrogate_path(obj: Any) -> str | None:
    """The JSON path (``$.a[2].b``) of the first key or string in ``obj`` that is not valid Unicode, else ``None``."""
    todo: list[tuple[str, Any]] = [("$", obj)]
    while todo:  # iterative: a deeply nested document must not exhaust the stack
        path, value = todo.pop()
        if isinstance(value, str):
            if not _is_unicode(value):
                return path
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str) and not _is_unicode(key):
                    return f"{path} (a key)"
                todo.append((f"{path}.{key}", item))
        elif isinstance(value, list):
            todo.extend((f"{path}[{i}]", item) for i, item in enumerate(value))
    return None


def refuse_surrogates(obj: Any, where: str) -> None:
    """Raise :class:`DataError` naming ``where`` and the field if ``obj`` holds a string that is not valid Unicode."""
    path = surrogate_path(obj)
    if path is not None:
        raise DataError(f"{where}: {path} is not valid Unicode (a lone surrogate escape such as \\ud800)")


def refuse_surrogates_in_text(text: str, obj: Any, where: str) -> None:
    """:func:`refuse_surrogates` for a whole JSON document ``text`` parsed as ``obj``; names the line of the escape."""
    match = _SURROGATE_ESCAPE.search(text)
    if match is None:
        return
    path = surrogate_path(obj)
    if path is not None:
        line = text.count("\n", 0, match.start()) + 1
        raise DataError(f"{where}:{line}: {path} is not valid Unicode (a lone surrogate escape such as \\ud800)")


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line of a (optionally gzipped) JSONL file.

    Raises:
        DataError: the file cannot be read or is not UTF-8; a line is not a JSON object, is nested
            too deeply, or holds a string that is not valid Unicode.
    """
    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    try:
        with opener(p, "rt", encoding="utf-8") as fh:
            for n, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{p}:{n}: invalid JSON: {exc.msg}") from exc
                except RecursionError as exc:
                    raise DataError(f"{p}:{n}: JSON nested too deeply") from exc
                if not isinstance(obj, dict):
                    raise DataError(f"{p}:{n}: expected a JSON object, got {type(obj).__name__}")
                if "\\u" in line and _SURROGATE_ESCAPE.search(line):  # cheap test first: escapes are rare
                    refuse_surrogates(obj, f"{p}:{n}")
                yield n, obj
    except UnicodeDecodeError as exc:
        raise DataError(f"{p}: not UTF-8 text ({exc.reason})") from exc
    except (OSError, EOFError, zlib.error) as exc:  # gzip raises EOFError/zlib.error on a truncated stream
        raise DataError(f"{p}: cannot read: {exc}") from exc
