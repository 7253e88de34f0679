"""Reading JSON-lines files, with errors that name the file and the line."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prime_retriever.errors import DataError


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line of a (optionally gzipped) JSONL file."""
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
                if not isinstance(obj, dict):
                    raise DataError(f"{p}:{n}: expected a JSON object, got {type(obj).__name__}")
                yield n, obj
    except UnicodeDecodeError as exc:
        raise DataError(f"{p}: not UTF-8 text ({exc.reason})") from exc
    except (OSError, EOFError, zlib.error) as exc:  # gzip raises EOFError/zlib.error on a truncated stream
        raise DataError(f"{p}: cannot read: {exc}") from exc
