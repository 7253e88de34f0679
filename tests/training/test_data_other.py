"""Doc2Dial, MuSiQue, NQ-open, LoCoMo on the shipped files; MS MARCO and the downloader on tmp files."""

from __future__ import annotations

import ast
import csv
import functools
import gzip
import hashlib
import http.server
import io
import json
import re
import threading
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from prime_retriever.errors import DataError
from training.data import Dataset, load_dataset, load_doc2dial, load_msmarco_dir, load_musique, split_examples
from training.data.doc2dial import cut_passages, iter_rows
from training.data.download import download, download_hotpotqa
from training.data.examples import FIRST_HOP


@pytest.fixture(scope="module")
def doc2dial(prime_data_dir: Path) -> Dataset:
    return load_doc2dial(prime_data_dir / "doc2dial" / "doc2dial_rc_val.csv.zip")


def test_doc2dial(prime_data_dir: Path, doc2dial: Dataset) -> None:
    ds = doc2dial
    ds.validate()
    rows = {r["id"]: r for _, r in iter_rows(prime_data_dir / "doc2dial" / "doc2dial_rc_val.csv.zip")}
    # every user turn of the file is an example, keyed by its dialogue; every document is cut into passages
    assert not ds.skipped and len(ds.examples) == len(rows) > 3000
    assert len({e.group_id for e in ds.examples}) == len({i.rsplit("_", 1)[0] for i in rows}) > 600
    assert {d.id.rsplit("#p", 1)[0] for d in ds.corpus.values()} == {r["title"] for r in rows.values()}
    for ex in ds.examples[:300]:
        turns = rows[ex.id]["question"].split("\t")
        assert ex.query == " ".join(turns[0].partition(":")[2].split())  # newest turn stored first
        if len(turns) == 1:
            assert ex.context == (ex.query,)
        else:
            assert len(ex.context) == len(turns) - 1
            assert ex.context[0] == "user: " + " ".join(turns[-1].partition(":")[2].split())
        answer = " ".join(ast.literal_eval(rows[ex.id]["answers"])["text"][0].split())
        assert any(answer[:40] in ds.corpus[p].text for p in ex.positive_ids)
    assert max(len(d.text.split()) for d in ds.corpus.values()) <= 180


def test_cut_passages() -> None:
    spans = {"1": "a b c ", "2": "\n\nHeading \n", "3": "d e ", "10": "f g h i "}
    assert cut_passages(spans, min_words=2, max_words=5) == [
        (("1",), "a b c"), (("2", "3"), "Heading d e"), (("10",), "f g h i")]


def test_musique(prime_data_dir: Path) -> None:
    path = prime_data_dir / "musique" / "hipporag_train100.json"
    raw = json.loads(path.read_text())
    first = load_musique(path, "first_hop")
    first.validate()
    companion = json.loads((prime_data_dir / "musique" / "hipporag_train100_corpus.json").read_text())
    # the companion corpus holds every question's paragraphs: nothing is added beyond it
    assert len(first.examples) == len(raw) and len(first.corpus) == len(companion) > 1000
    multi = load_musique(path, "multi_hop")
    multi.validate()
    for r, ex in zip(raw, first.examples, strict=True):
        assert len(ex.positive_ids) == sum(p["is_supporting"] for p in r["paragraphs"])
        chain = [first.corpus[p] for p in ex.positive_ids]
        idx = [d["paragraph_support_idx"] for d in r["question_decomposition"]]
        assert [c.title for c in chain] == [r["paragraphs"][i]["title"] for i in idx]
    assert len(multi.examples) == sum(len(e.positive_ids) - 1 for e in first.examples)
    ex = multi.examples[0]
    assert ex.context == (ex.query, multi.corpus[ex.exclude_ids[0]].text)
    # duplicate titles with different texts get distinct, deterministic ids
    titles = [d.title for d in first.corpus.values()]
    assert len(set(titles)) < len(titles) and any("#" in i for i in first.corpus)


def test_nq_open(prime_data_dir: Path) -> None:
    path = prime_data_dir / "nq_open" / "nq-open-oracle.jsonl.gz"
    ds = load_dataset(path, "given")
    ds.validate()
    with gzip.open(path, "rt") as fh:
        lines = fh.readlines()
    assert len(ds.examples) == len(lines)
    first = json.loads(lines[0])
    gold = next(c for c in first["ctxs"] if c["isgold"])
    ex = ds.examples[0]
    assert ex.context == (first["question"],) and ds.corpus[ex.positive_ids[0]].title == gold["title"]


def test_locomo(prime_data_dir: Path) -> None:
    ds = load_dataset(prime_data_dir / "locomo" / "locomo10.zip", "given")
    ds.validate()
    assert len({e.id.split(":")[1] for e in ds.examples}) == 10
    assert all(p.split(":")[0] == e.id.split(":")[1] for e in ds.examples for p in e.positive_ids)
    # each question searches its own conversation: questions and turns carry the conversation as scope
    assert all(e.scope == e.id.split(":")[1] for e in ds.examples)
    assert all(d.scope == i.split(":")[0] for i, d in ds.corpus.items())
    # a conversation is one group: a split by group (train/eval, validation) keeps its questions together
    assert {e.group_id for e in ds.examples} == {f"locomo:{e.scope}" for e in ds.examples}
    train, held = split_examples(ds.examples, 0.3, "locomo-test")
    assert train and held and not {e.scope for e in train} & {e.scope for e in held}
    assert len(ds.examples) > 1900 and sum(ds.skipped.values()) < 10
    with pytest.raises(DataError, match="only the 'given' framing"):
        load_dataset(prime_data_dir / "locomo" / "locomo10.zip", "first_hop")


def test_msmarco(tmp_path: Path) -> None:
    (tmp_path / "collection.tsv").write_text("0\tThe cat sat.\n1\tDogs bark  loudly.\n2\tFish swim.\n")
    (tmp_path / "queries.dev.tsv").write_text("10\twhat do dogs do\n11\twhere is the cat\n12\tno answer\n")
    (tmp_path / "qrels.dev.tsv").write_text("10 0 1 1\n11 0 0 1\n11 0 2 0\n")
    ds = load_dataset(tmp_path, "given")
    ds.validate()
    assert [(e.id, e.context, e.query, e.positive_ids) for e in ds.examples] == [
        ("10", ("what do dogs do",), "what do dogs do", ("1",)),
        ("11", ("where is the cat",), "where is the cat", ("0",))]
    assert ds.corpus["1"].text == "Dogs bark loudly." and ds.skipped == {"no relevant passage": 1}
    (tmp_path / "qrels.dev.tsv").write_text("10 0 7 1\n")
    with pytest.raises(DataError, match="not in"):
        load_msmarco_dir(tmp_path)
    (tmp_path / "qrels.dev.tsv").write_text("10 0 1\n")
    with pytest.raises(DataError, match=r"qrels.dev.tsv:1: expected"):
        load_msmarco_dir(tmp_path)


@pytest.fixture()
def http_file(tmp_path: Path) -> Iterator[tuple[str, bytes]]:
    payload = b'[{"_id": "x"}]\n' * 1000
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / "f.json").write_bytes(payload)
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(tmp_path / "srv"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/f.json", payload
    finally:
        server.shutdown()
        server.server_close()


def test_download_verifies(http_file: tuple[str, bytes], tmp_path: Path) -> None:
    url, payload = http_file
    good = hashlib.sha256(payload).hexdigest()
    dest = tmp_path / "out" / "f.json"
    assert download(url, dest, sha256=good) == good and dest.read_bytes() == payload
    with pytest.raises(DataError, match="sha256 mismatch"):
        download(url, tmp_path / "out" / "g.json", sha256="0" * 64)
    assert not (tmp_path / "out" / "g.json").exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["f.json"]  # no temp files left
    with pytest.raises(DataError, match="no sha256 pin"):
        download(url, tmp_path / "out" / "h.json", require_pin=True)
    assert download(url, tmp_path / "out" / "h.json") == good  # unpinned: kept, hash returned


def _serve_once(response: bytes) -> tuple[str, threading.Thread]:
    """A one-request HTTP server that answers with the raw bytes ``response``, then closes."""
    import socket

    srv = socket.create_server(("127.0.0.1", 0))

    def run() -> None:
        with srv:
            conn, _ = srv.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(response)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return f"http://127.0.0.1:{srv.getsockname()[1]}/f.json", thread


@pytest.mark.parametrize(("response", "message"), [
    # a body shorter than its Content-Length: http.client ends it without an error
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n" + b"x" * 400,
     r"truncated: got 400 of 1000 bytes"),
    # a chunked body cut off mid-stream: http.client raises IncompleteRead, not an OSError
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n100\r\n" + b"x" * 10,
     r"download failed: IncompleteRead"),
])
def test_download_refuses_a_cut_off_body(tmp_path: Path, response: bytes, message: str) -> None:
    url, thread = _serve_once(response)
    with pytest.raises(DataError, match=message):
        download(url, tmp_path / "f.json")
    thread.join(5)
    assert list(tmp_path.iterdir()) == []  # nothing renamed into place, no temp file left


def test_download_file_url(tmp_path: Path) -> None:
    src = tmp_path / "src.json"
    src.write_bytes(b"[]")
    pin = hashlib.sha256(b"[]").hexdigest()
    assert download(src.as_uri(), tmp_path / "dst.json", sha256=pin) == pin
    src.unlink()  # a destination that matches its pin is not fetched again
    assert download(src.as_uri(), tmp_path / "dst.json", sha256=pin) == pin
    with pytest.raises(DataError, match="download failed"):
        download((tmp_path / "missing").as_uri(), tmp_path / "x.json")
    with pytest.raises(DataError, match="no sha256 pin"):
        download_hotpotqa(tmp_path, require_pin=True)


def _write_zip_junk(p: Path) -> None:
    p.write_bytes(b"not a zip at all")


@pytest.mark.parametrize(("name", "content", "fmt", "message"), [
    ("g.jsonl", '{"id": "e1", "context": ["caf\xe9"], "query": "q", "positive_ids": ["d"]}\n'.encode("latin-1"),
     "given", "g.jsonl: not UTF-8 text"),
    ("h.json", '[{"_id": "caf\xe9"}]'.encode("latin-1"), "first_hop", "h.json: not UTF-8 text"),
    ("nq.jsonl.gz", gzip.compress(b'{"question": "q", "ctxs": []}\n' * 2000)[:100], "given",
     "nq.jsonl.gz: cannot read"),
    ("conv.zip", b"not a zip at all", "given", "conv.zip: cannot read as a zip"),
    ("d.csv", "id,question,answers,spans,title\na_1,user:caf\xe9,{},{},D\n".encode("latin-1"), "given",
     "d.csv: not UTF-8 text"),
    ("e.csv", b'id,question,answers,spans,title\na_1,user:hi,"{[1]: 2}","{}",D\n', "given",
     r"e.csv:2: column 'answers' is not a Python literal dict"),
])
def test_unreadable_files_raise_data_error(tmp_path: Path, name: str, content: bytes, fmt: str, message: str) -> None:
    (tmp_path / name).write_bytes(content)
    (tmp_path / "g.corpus.jsonl").write_text('{"id": "d", "text": "t"}\n')
    with pytest.raises(DataError, match=message):
        load_dataset(tmp_path / name, fmt)


def test_msmarco_reads_utf8_only_and_keeps_a_carriage_return_inside_a_passage(tmp_path: Path) -> None:
    (tmp_path / "collection.tsv").write_bytes(b"0\tfirst half\rsecond half\r\n1\tother\n")
    (tmp_path / "queries.dev.tsv").write_text("7\tq\n")
    (tmp_path / "qrels.dev.tsv").write_text("7 0 0 1\n")
    ds = load_msmarco_dir(tmp_path)
    assert ds.corpus["0"].text == "first half second half" and len(ds.corpus) == 2
    (tmp_path / "collection.tsv").write_bytes("0\tcaf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"collection\.tsv: not UTF-8 text"):
        load_msmarco_dir(tmp_path)


# ------------------------------------------------------------------------- malformed records


def _csv(rows: list[dict[str, str]], header: str = "id,question,answers,spans,title") -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=header.split(","))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def _d2d(**kw: str) -> dict[str, str]:
    row = {"id": "d_1", "question": "user: how do I renew?", "answers": "{'spans': {'1': 'x'}}",
           "spans": "{'1': 'Renew online.'}", "title": "renewals#1"}
    return {**row, **kw}


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _musique(rec: object) -> bytes:
    return json.dumps([rec]).encode()


_LOCOMO_OK_TURN = {"dia_id": "D1:1", "text": "hi", "speaker": "A"}
MALFORMED: list[tuple[str, str, bytes, str]] = [
    # (reader, file name, content, message after the file's name and record position)
    ("musique", "m.json", _musique({"id": 1, "question": "q", "paragraphs": []}),
     r"m\.json\[0\]: expected string 'id', 'question' and a 'paragraphs' list"),
    ("musique", "m.json", _musique({"id": "a", "question": "q", "paragraphs": [{"idx": "0", "title": "T",
                                                                                "paragraph_text": "x"}]}),
     r"m\.json\[0\]: paragraphs need int 'idx'"),
    ("musique_corpus", "c.json", b'{"a": 1}', r"c\.json: expected a list of \{title, text\}"),
    ("musique_corpus", "c.json", b'[{"title": 1, "text": "x"}]', r"c\.json\[0\]: expected \{title, text\} strings"),
    ("nq_open", "n.jsonl", b'{"question": "q"}\n', r"n\.jsonl:1: expected a string 'question' and a 'ctxs' list"),
    ("nq_open", "n.jsonl", b'{"question": "q", "ctxs": [{"title": "t"}]}\n',
     r"n\.jsonl:1: ctxs items need string 'title' and 'text'"),
    ("locomo", "l.zip", _zip({"c1.json": b"[]"}), r"l\.zip!c1\.json: expected a conversation object with a 'qa' list"),
    ("locomo", "l.zip", _zip({"c1.json": b'{"qa": [], "session_1": {}}'}),
     r"l\.zip!c1\.json: session_1 must be a list of turns"),
    ("locomo", "l.zip", _zip({"c1.json": json.dumps({"qa": [], "session_1": [{"dia_id": 1, "text": "x"}]}).encode()}),
     r"l\.zip!c1\.json: session_1 turns need string 'dia_id' and 'text'"),
    ("locomo", "l.zip", _zip({"c1.json": json.dumps({"qa": [{"q": 1}], "session_1": [_LOCOMO_OK_TURN]}).encode()}),
     r"l\.zip!c1\.json: qa\[0\] needs a string 'question'"),
    ("locomo", "l.zip", _zip({"c1.json": b'{"qa": ['}), r"l\.zip!c1\.json:1: invalid JSON"),
    ("doc2dial", "d.csv", _csv([{"id": "d_1", "question": "q"}], header="id,question"),
     r"d\.csv: missing columns \['answers', 'spans', 'title'\]"),
    ("doc2dial", "d.csv", _csv([_d2d(spans="{'1': 2}")]), r"d\.csv:2: spans values must be strings"),
    ("doc2dial", "d.csv", _csv([_d2d(spans="{oops")]), r"d\.csv:2: column 'spans' is not a Python literal dict"),
    ("doc2dial", "d.csv", _csv([_d2d(answers="[1]")]), r"d\.csv:2: column 'answers' is not a dict"),
    ("doc2dial", "d.csv", _csv([_d2d(answers="{'spans': {'9': 'x'}}")]),
     r"d\.csv:2: grounding span ids \['9'\] not in the document's spans"),
    ("doc2dial", "d.csv", _csv([_d2d(question="\t ")]), r"d\.csv:2: empty dialogue history"),
    ("doc2dial", "d.csv", _csv([_d2d(question="agent: how can I help?")]),
     r"d\.csv:2: the current turn is not a user turn"),
    ("doc2dial", "d.zip", _zip({"a.csv": _csv([_d2d()]), "b.csv": _csv([_d2d()])}),
     r"d\.zip: expected exactly one member, found \['a\.csv', 'b\.csv'\]"),
]


@pytest.mark.parametrize(("reader", "name", "content", "message"), MALFORMED)
def test_a_malformed_record_is_a_data_error_naming_its_file_and_place(
    tmp_path: Path, reader: str, name: str, content: bytes, message: str
) -> None:
    from training.data.locomo import load_locomo
    from training.data.nq_open import load_nq_open

    p = tmp_path / name
    p.write_bytes(content)
    good = tmp_path / "good.json"
    good.write_bytes(_musique({"id": "a", "question": "q", "paragraphs": []}))
    load: dict[str, Callable[[], object]] = {
        "musique": lambda: load_musique(p, FIRST_HOP, corpus_path=None),
        "musique_corpus": lambda: load_musique(good, FIRST_HOP, corpus_path=p),
        "nq_open": lambda: load_nq_open(p),
        "locomo": lambda: load_locomo(p),
        "doc2dial": lambda: load_doc2dial(p),
    }
    with pytest.raises(DataError, match=re.escape(str(tmp_path)) + "/" + message):
        load[reader]()


def test_the_malformed_record_readers_accept_the_same_record_made_whole(tmp_path: Path) -> None:
    """The templates above are one fault away from valid: each reader reads its fixed record."""
    from training.data.locomo import load_locomo

    (tmp_path / "d.csv").write_bytes(_csv([_d2d()]))
    d2d = load_doc2dial(tmp_path / "d.csv")
    assert [(e.query, e.positive_ids) for e in d2d.examples] == [("how do I renew?", ("renewals#1#p0",))]
    conv = {"qa": [{"question": "who said hi?", "evidence": ["D1:1"]}], "session_1": [_LOCOMO_OK_TURN]}
    (tmp_path / "l.zip").write_bytes(_zip({"c1.json": json.dumps(conv).encode()}))
    assert [e.positive_ids for e in load_locomo(tmp_path / "l.zip").examples] == [("c1:D1:1",)]
