"""Argument types shared by the command-line subcommands: a bad value exits 2 with one line, before any work."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """An ``int`` ≥ 1 (batch sizes, counts, threads)."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """An ``int`` ≥ 0 (caps where 0 means "no cap")."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def cosine(text: str) -> float:
    """A cosine similarity: a finite ``float`` in [-1, 1] (cache thresholds)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not -1.0 <= value <= 1.0:  # NaN fails too
        raise argparse.ArgumentTypeError(f"expected a cosine in [-1, 1], got {text!r}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def report_path(text: str) -> str:
    """A file to write a report to: refused up front when it could not be written after the run."""
    from pathlib import Path

    p = Path(text)
    if p.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a directory, not a file")
    if not p.parent.is_dir():
        raise argparse.ArgumentTypeError(f"the directory of {text!r} does not exist")
    return text


def output_dir(text: str) -> str:
    """A directory to write into (created if missing): refused up front when a file stands in its way."""
    from pathlib import Path

    p = Path(text)
    if p.exists() and not p.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is an existing file, not a directory")
    for parent in p.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise argparse.ArgumentTypeError(f"{text!r} cannot be created: {parent} is a file")
            break
    return text


def parse_bool(s: str) -> bool:
    """An argparse type for BOOL flags: 1/true/yes/on or 0/false/no/off; anything else is refused."""
    if s.lower() in ("1", "true", "yes", "on"):
        return True
    if s.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {s!r}")
