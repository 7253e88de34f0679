"""Every ``prime-retriever`` command README.md shows, run as the installed console script on tiny files.

The commands are read from README.md at test time: each backticked span or fenced ``bash`` line that
starts with ``prime-retriever``. Their placeholders (``corpus.jsonl``, ``e_train.jsonl``, ``FILE...``,
``DIR``, ``CKPT``, ``OUT``, ``[--int8]``, ``COMMAND``) become tiny files made here, kept in separate
folders so that no command works only because a file happens to sit beside another. A few flags
that make a run small are appended (:data:`REDUCED`); the README's own flags are all kept. The
shipped benchmark (``--preset shipped``) is ``make demo``: integration_tests/test_readme_main_command.py
runs it. A command the README gains that this test cannot run fails :func:`test_every_readme_command_is_run`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from integration_tests.conftest import REPO
from prime_retriever.cli.main import COMMANDS

README = REPO / "README.md"
# flags appended to a README command so that it runs in seconds on the tiny files (never replacing one it shows)
REDUCED: dict[str, list[str]] = {
    "train": ["--framing", "given", "--max-steps", "3", "--eval-fraction", "0.3", "--no-progress"],
    "bench": ["--num-epochs", "2", "--framing", "given"],
    "bench-latency": ["--quick"],
    "bench-retriever": ["--max-docs", "60", "--queries", "6", "--latency-queries", "4", "--throughput-calls", "8",
                        "--callers", "4", "--cache-queries", "4"],
    "index": ["--no-progress"],
}
RUN_ELSEWHERE = ("--preset shipped",  # make demo: test_readme_main_command.py
                 "--leave-one-out")  # its reduced protocol: test_leave_one_out.py
KNOWN_PLACEHOLDERS = {"corpus.jsonl", "e_train.jsonl", "e_eval.jsonl", "FILE...", "FILE", "DIR", "CKPT", "OUT",
                      "[--int8]", "COMMAND", "links.json"}


def readme_commands(text: str) -> list[str]:
    """The ``prime-retriever ...`` commands of a README, in order, each once."""
    found: list[str] = []
    in_bash = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_bash = line.strip() in ("```bash", "```sh", "```console")
            continue
        if in_bash:
            cmd = line.split("#", 1)[0].strip().removeprefix("$ ")
            if cmd.startswith("prime-retriever "):
                found.append(cmd)
            continue
        found += [m.strip() for m in re.findall(r"`(prime-retriever [^`]+)`", line)]
    return list(dict.fromkeys(" ".join(c.split()) for c in found))


def test_readme_commands_are_parsed_from_backticks_and_bash_blocks() -> None:
    text = ("| `prime-retriever info CKPT` / `predict` |\n"
            "```bash\nprime-retriever links c.jsonl --out g.json  # x\n```\n")
    assert readme_commands(text) == ["prime-retriever info CKPT", "prime-retriever links c.jsonl --out g.json"]


@dataclass
class Files:
    root: Path
    corpus: Path
    train: Path  # examples in a folder of their own: the corpus is passed with --corpus
    eval: Path
    data: Path  # the same examples with the corpus.jsonl beside them (train --data FILE finds it there)
    ckpt: Path


def _write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


TOPICS = ["Ada Lovelace", "Charles Babbage", "Analytical Engine", "Alan Turing", "Enigma machine", "Bletchley Park",
          "Grace Hopper", "COBOL", "John von Neumann", "EDVAC", "Claude Shannon", "Information theory",
          "Konrad Zuse", "Z3 computer", "Tommy Flowers", "Colossus computer", "Margaret Hamilton", "Apollo program",
          "Dennis Ritchie", "C programming language", "Ken Thompson", "Unix", "Tim Berners-Lee", "World Wide Web",
          "Linus Torvalds", "Linux kernel", "Guido van Rossum", "Python language", "Barbara Liskov", "CLU language",
          "Edsger Dijkstra", "Shortest path problem", "Donald Knuth", "TeX", "Frances Allen", "Compiler optimization",
          "John McCarthy", "Lisp language", "Niklaus Wirth", "Pascal language"]


def _make_files(root: Path) -> Files:
    corpus = _write_jsonl(root / "docs" / "corpus.jsonl", [
        {"id": f"d{i}", "title": t, "text": f"{t} is linked to {TOPICS[i ^ 1]}; this paragraph is about {t}."}
        for i, t in enumerate(TOPICS)
    ])

    def examples(rng: range) -> list[dict[str, object]]:
        return [{"id": f"q{i}", "context": [f"user: I am reading about {TOPICS[i ^ 1]}."],
                 "query": f"what is known about {TOPICS[i]}?", "positive_ids": [f"d{i}"]} for i in rng]

    train = _write_jsonl(root / "examples" / "e_train.jsonl", examples(range(0, 28)))
    ev = _write_jsonl(root / "examples" / "e_eval.jsonl", examples(range(28, 40)))
    data = _write_jsonl(root / "data" / "examples.jsonl", examples(range(0, 40)))
    (root / "data" / "corpus.jsonl").write_bytes(corpus.read_bytes())
    return Files(root, corpus, train, ev, data, root / "ckpt")


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("prime-retriever")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "prime_retriever.cli.main"]


def _run(argv: list[str], cwd: Path, stdin: str | None = None, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([*_cli(), *argv], cwd=cwd, env=env, input=stdin, capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, f"prime-retriever {shlex.join(argv)}: exit {r.returncode}\n{r.stdout[-2000:]}\n" \
                              f"{r.stderr[-3000:]}"
    assert "Traceback" not in r.stderr
    return r


def _expand(cmd: str, files: Files, n: int) -> Iterator[list[str]]:
    """The argv lists one README command stands for, its placeholders made into tiny files (``n`` numbers dirs)."""
    tokens = shlex.split(cmd)[1:]
    if tokens and tokens[0] == "COMMAND":
        for name in COMMANDS:
            yield [name, *tokens[1:]]
        return
    optional = [t for t in tokens if t.startswith("[") and t.endswith("]")]
    variants: list[list[str]] = [[], *([t.strip("[]")] for t in optional)]
    base = [t for t in tokens if t not in optional]
    command = base[0]
    for extra in variants:
        argv: list[str] = []
        for i, t in enumerate(base):
            prev = base[i - 1] if i else ""
            if t == "corpus.jsonl":
                argv.append(str(files.corpus))
            elif t == "e_train.jsonl":
                argv.append(str(files.train))
            elif t in ("FILE", "FILE..."):
                argv.append(str(files.data))
            elif t == "e_eval.jsonl":
                argv.append(str(files.eval))
            elif t == "links.json":
                argv.append(str(files.root / f"links{n}.json"))
            elif t == "DIR":
                argv.append(str(files.root / f"dir{n}{''.join(extra)}"))
            elif t == "CKPT":
                argv.append(str(files.ckpt if command != "train" or prev != "--out" else files.root / f"ckpt{n}"))
            elif t == "OUT":
                argv.append(str(files.root / f"out{n}{''.join(extra)}.onnx"))
            else:
                argv.append(t)
        if command == "predict" and "--checkpoint" not in argv:
            argv += ["--checkpoint", str(files.ckpt)]
        if command == "convert" and len(argv) == 1:
            argv += [str(files.train), "--corpus", str(files.corpus), "--framing", "given",
                     "--out-examples", str(files.root / f"conv{n}.jsonl"),
                     "--out-corpus", str(files.root / f"conv{n}.corpus.jsonl")]
        if "--help" not in argv:
            argv += REDUCED.get(command, [])
        yield [*argv, *extra]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    f = _make_files(tmp_path_factory.mktemp("readme"))
    # the checkpoint the other commands read: the README's train command
    _run(["train", "--data", str(f.data), "--out", str(f.ckpt), *REDUCED["train"]], cwd=f.root)
    return f


def _commands() -> list[str]:
    return [c for c in readme_commands(README.read_text(encoding="utf-8")) if not any(s in c for s in RUN_ELSEWHERE)]


def test_every_readme_command_is_run() -> None:
    cmds = readme_commands(README.read_text(encoding="utf-8"))
    assert cmds, "README.md shows no prime-retriever command"
    for cmd in cmds:
        name = shlex.split(cmd)[1]
        assert name in COMMANDS or name == "COMMAND", f"README shows an unknown command: {cmd}"
        unknown = [t for t in shlex.split(cmd)[2:] if t.isupper() or ("." in t and not t.startswith("-"))]
        assert set(unknown) <= KNOWN_PLACEHOLDERS, f"{cmd}: placeholders this test cannot fill: {unknown}"


@pytest.mark.parametrize("cmd", _commands())
def test_readme_command_runs(cmd: str, files: Files, prime_data_dir: Path) -> None:
    n = _commands().index(cmd)
    for argv in _expand(cmd, files, n):
        stdin = None
        if "--help" in argv:
            assert "usage: prime-retriever" in _run(argv, cwd=files.root).stdout
            continue
        if argv[0] == "predict":
            stdin = json.dumps({"context_embeddings": [[0.1] * 384], "query_embedding": [0.2] * 384})
        r = _run(argv, cwd=files.root, stdin=stdin)
        if argv[0] == "predict":
            assert len(json.loads(r.stdout)["predicted_embedding"]) == 384
        if argv[0] == "bench":
            out = Path(argv[argv.index("--out") + 1])
            assert set(json.loads((out / "report.json").read_text())["framings"]) == {"given"}
        if argv[0] == "index":
            assert json.loads(r.stdout)["count_after"] == len(TOPICS)


def test_bench_refuses_an_out_store_it_did_not_build(files: Files) -> None:
    out = files.root / "taken"
    (out / "store").mkdir(parents=True)
    (out / "store" / "keep.txt").write_text("mine")
    r = subprocess.run([*_cli(), "bench", "--train", str(files.train), "--eval", str(files.eval), "--corpus",
                        str(files.corpus), "--out", str(out), *REDUCED["bench"]],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 1 and "nothing was deleted" in r.stderr and "Traceback" not in r.stderr
    assert (out / "store" / "keep.txt").read_text() == "mine"
