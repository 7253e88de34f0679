"""Replacing a file whole: written to a temporary file beside it, fsynced, then renamed over it."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def _replacing(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """A binary file that replaces ``path`` when the block ends; if the block raises, nothing changes."""
    p = Path(path)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part.

    A failure (a full disk, an interruption) leaves the old file as it was and no temporary file.
    """
    with _replacing(path) as f:
        f.write(data)


def write_lines_atomic(path: str | os.PathLike[str], lines: Iterable[str]) -> int:
    """Stream ``lines`` (UTF-8, each ended by ``\\n``) to ``path`` as :func:`write_bytes_atomic` does.

    Returns the number of lines. If ``lines`` raises part-way, the old file stays as it was.
    """
    n = 0
    with _replacing(path) as f:
        for line in lines:
            f.write(line.encode("utf-8"))
            f.write(b"\n")
            n += 1
    return n
