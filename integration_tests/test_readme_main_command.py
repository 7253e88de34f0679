"""The README's main command (``make demo``), end to end as a subprocess, on a reduced run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from integration_tests.conftest import REPO

CHECK_REPORT = REPO.parent / "shared" / "tools" / "check_report.py"


def test_make_demo_with_limit(prime_data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    env = {**os.environ, "PRIME_DATA_DIR": str(prime_data_dir)}
    r = subprocess.run(
        ["make", "-s", "demo", f"DEMO_OUT={out}", "DEMO_ARGS=--limit 40 --num-epochs 2 --time-budget-s 60"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1500,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "| framing | method |" in r.stdout and "goals:" in r.stdout
    report = json.loads((out / "report.json").read_text())
    assert set(report["framings"]) == {"first_hop", "multi_hop", "given"}
    assert (out / "recall_at_k.png").stat().st_size > 0
    assert (out / "checkpoint" / "meta.json").is_file() and (out / "adapter" / "adapter.json").is_file()
    if CHECK_REPORT.is_file():
        check = subprocess.run([sys.executable, str(CHECK_REPORT), str(out / "report.json")],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stdout
