"""Download the official HotpotQA files, verified and written atomically.

Only for machines with internet; tests use ``file://`` or a local 127.0.0.1 server. The sha256
pins of the official files are NOT known to this code base (they could not be checked offline),
so :data:`HOTPOTQA_FILES` leaves them as ``None``: fill them in from a trusted download. When a
pin is known (in the table or passed as ``sha256``) verification is mandatory and a mismatch
deletes the download; with no pin the file is kept, a warning is logged with its sha256, and
``require_pin=True`` refuses the download instead.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from prime_retriever.errors import DataError
from prime_retriever.model.checkpoint import sha256_file

log = logging.getLogger(__name__)

HOTPOTQA_BASE_URL = "http://curtis.ml.cmu.edu/datasets/hotpot/"


@dataclass(frozen=True)
class RemoteFile:
    """A file to fetch and its pinned sha256 (``None`` = unknown, see the module doc)."""

    url: str
    sha256: str | None = None


HOTPOTQA_FILES: dict[str, RemoteFile] = {
    "hotpot_train_v1.1.json": RemoteFile(HOTPOTQA_BASE_URL + "hotpot_train_v1.1.json", None),
    "hotpot_dev_distractor_v1.json": RemoteFile(HOTPOTQA_BASE_URL + "hotpot_dev_distractor_v1.json", None),
}


def download(url: str, dest: str | Path, *, sha256: str | None = None, require_pin: bool = False,
             timeout: float = 60.0) -> str:
    """Fetch ``url`` to ``dest`` atomically (temp file + rename); returns the file's sha256.

    With ``sha256`` the content must match (else :class:`DataError`, nothing written). An
    existing ``dest`` that matches the pin is not downloaded again.
    """
    d = Path(dest)
    if sha256 is None and require_pin:
        raise DataError(f"no sha256 pin for {url}; refusing an unverified download")
    if sha256 is not None and d.exists() and sha256_file(d) == sha256.lower():
        return sha256.lower()
    d.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{d.name}.", suffix=".part", dir=d.parent)
    h = hashlib.sha256()
    received = 0
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            expected = getattr(resp, "length", None)  # Content-Length; a short body ends without an error
            while block := resp.read(1 << 20):
                h.update(block)
                out.write(block)
                received += len(block)
            if expected is not None and received < expected:
                raise DataError(f"{url}: download truncated: got {received} of {expected} bytes")
            out.flush()
            os.fsync(out.fileno())
        digest = h.hexdigest()
        if sha256 is not None and digest != sha256.lower():
            raise DataError(f"{url}: sha256 mismatch: got {digest}, expected {sha256.lower()}")
        if sha256 is None:
            log.warning("%s: no sha256 pin, downloaded file has sha256 %s (pin it in HOTPOTQA_FILES)", url, digest)
        os.replace(tmp, d)
        return digest
    except DataError:
        raise
    except (OSError, http.client.HTTPException, ValueError) as exc:  # IncompleteRead; ValueError: a bad URL
        raise DataError(f"{url}: download failed: {exc!r}") from exc
    finally:
        Path(tmp).unlink(missing_ok=True)


def download_hotpotqa(dest_dir: str | Path, names: tuple[str, ...] = tuple(HOTPOTQA_FILES), *,
                      pins: dict[str, str] | None = None, require_pin: bool = False) -> dict[str, Path]:
    """Download the official HotpotQA files into ``dest_dir``; ``pins`` override the table's sha256s."""
    out: dict[str, Path] = {}
    for name in names:
        if name not in HOTPOTQA_FILES:
            raise DataError(f"unknown HotpotQA file {name!r} (known: {sorted(HOTPOTQA_FILES)})")
        remote = HOTPOTQA_FILES[name]
        pin = (pins or {}).get(name, remote.sha256)
        dest = Path(dest_dir) / name
        download(remote.url, dest, sha256=pin, require_pin=require_pin)
        out[name] = dest
    return out
