"""Property-based tests of the file readers and ``prime-retriever predict``'s input.

For arbitrary file contents (bytes, JSON of any nesting, strings with any code point, surrogate
escapes included), ``iter_jsonl``, ``read_corpus_jsonl`` and the training examples reader either
raise :class:`~prime_retriever.errors.DataError` or return well-formed records whose every string is
valid Unicode. For arbitrary JSON on stdin, ``predict`` exits 0 with a unit vector or exits 1 with
one line on stderr; it never raises.
"""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prime_retriever.cli.main import main
from prime_retriever.errors import DataError
from prime_retriever.model.checkpoint import save_checkpoint
from prime_retriever.model.config import PredictorConfig
from prime_retriever.model.predictor import EmbeddingPredictor
from prime_retriever.text.corpus import read_corpus_jsonl
from prime_retriever.text.documents import Document
from prime_retriever.text.jsonl import iter_jsonl, surrogate_path
from training.data.generic import read_examples

T = TypeVar("T")
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
any_text = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=20)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | any_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=12,
)
# a corpus/example-like object: the right keys with values of any type
records = st.fixed_dictionaries({}, optional={
    "id": json_values | any_text, "text": json_values | any_text, "title": json_values, "scope": json_values,
    "context": st.lists(any_text, max_size=3) | json_values, "query": any_text | json_values,
    "positive_ids": st.lists(st.sampled_from(["d0", "d1", "x"]), max_size=2) | json_values,
})


def _dump(value: Any) -> str:
    # ensure_ascii writes a lone surrogate as its \\udxxx escape, as a foreign tool would
    return json.dumps(value, ensure_ascii=True, allow_nan=True)


@st.composite
def files(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(st.one_of(records.map(_dump), json_values.map(_dump), any_text.map(_dump),
                                    st.binary(max_size=12).map(lambda b: b.decode("latin-1"))), max_size=5))
    raw = "\n".join(lines).encode("utf-8", errors="surrogatepass")
    return raw + draw(st.sampled_from([b"", b"\n", b"\xff", b"\x00"]))


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


def _valid(obj: Any) -> bool:
    return surrogate_path(obj) is None


def _read_or_data_error(path: Path, content: bytes, read: Callable[[Path], T]) -> T | None:
    """Write ``content`` to ``path`` and read it: the records, or None after a DataError naming the file."""
    path.write_bytes(content)
    try:
        return read(path)
    except DataError as exc:
        assert str(path) in str(exc)
        return None


@SETTINGS
@given(content=files())
def test_iter_jsonl_gives_data_errors_or_unicode_objects(scratch: Path, content: bytes) -> None:
    rows = _read_or_data_error(scratch / "f.jsonl", content, lambda p: list(iter_jsonl(p)))
    if rows is None:
        return
    assert all(isinstance(n, int) and isinstance(o, dict) and _valid(o) for n, o in rows)


@SETTINGS
@given(content=files())
def test_read_corpus_gives_data_errors_or_documents(scratch: Path, content: bytes) -> None:
    docs = _read_or_data_error(scratch / "corpus.jsonl", content, read_corpus_jsonl)
    if docs is None:
        return
    assert all(isinstance(d, Document) and d.id and d.text.strip() for d in docs)
    assert len({d.id for d in docs}) == len(docs)
    assert all(_valid([d.id, d.text, d.title, d.scope]) for d in docs)


@SETTINGS
@given(content=files())
def test_read_examples_gives_data_errors_or_examples(scratch: Path, content: bytes) -> None:
    corpus = {i: Document(id=i, text="t") for i in ("d0", "d1")}
    examples = _read_or_data_error(scratch / "examples.jsonl", content, lambda p: read_examples(p, corpus))
    if examples is None:
        return
    for ex in examples:
        assert ex.query.strip() and ex.context and set(ex.positive_ids) <= set(corpus)
        assert _valid([ex.query, *ex.context])


@pytest.fixture(scope="module")
def ckpt(scratch: Path) -> Path:
    torch.manual_seed(0)
    cfg = PredictorConfig(input_dim=8, output_dim=8, hidden_dim=16, num_layers=1, num_heads=2, max_context_length=3,
                          use_torch_compile=False)
    save_checkpoint(EmbeddingPredictor(cfg), scratch / "ck")
    return scratch / "ck"


vectors = st.lists(st.floats(allow_nan=False, allow_infinity=False) | st.integers(-10, 10), min_size=0, max_size=9)


@SETTINGS
@given(payload=st.one_of(
    st.fixed_dictionaries({"context_embeddings": st.lists(vectors, max_size=4), "query_embedding": vectors}),
    json_values,
))
def test_predict_exits_0_with_a_unit_vector_or_1_with_one_line(ckpt: Path, payload: Any,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(payload)))
    code = main(["predict", "--checkpoint", str(ckpt)])
    out, err = capsys.readouterr()
    if code == 0:
        vec = json.loads(out)["predicted_embedding"]
        assert len(vec) == 8 and abs(sum(x * x for x in vec) - 1.0) < 1e-3
    else:
        assert code == 1 and out == "" and err.count("\n") == 1 and err.startswith("prime-retriever predict: error:")
