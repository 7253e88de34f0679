"""Fault injection over the real stores (Qdrant local mode and qdrant-edge).

Faults: the store dies between the link search and the final search; the store hangs; the process
is killed (SIGKILL) mid-upsert and mid-``optimize()``; two processes open the same store; a
checkpoint's weights change on disk while loaded. The property, each time: bounded time, a typed
error (:class:`~prime_retriever.errors.PrimeError`) or a marked fallback, and nothing lost or
duplicated (points counted before and after; every acknowledged point is there once).

The kill cases run the store in a child process (``python -c``) that prints one line per
acknowledged batch; the parent kills it with SIGKILL after a few and reopens the store.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import torch
from qdrant_client import models

from prime_retriever.errors import CheckpointError, PrimeError, RetrieverError, StoreError
from prime_retriever.model.checkpoint import WEIGHTS_FILE, load_checkpoint, save_checkpoint
from prime_retriever.model.config import PredictorConfig
from prime_retriever.model.predictor import EmbeddingPredictor
from prime_retriever.retrieval.link_graph import LinkExpansion, LinkGraph
from prime_retriever.retrieval.retriever import PredictiveRetriever
from prime_retriever.stores.base import ScoredDoc, StoreUnavailableError, VectorStore
from prime_retriever.stores.open import open_store
from prime_retriever.stores.retry import RetryPolicy
from prime_retriever.text.bm25 import SparseVector
from prime_retriever.text.documents import Document
from tests.prime_retriever.retrieval.test_retriever import shared_encoder, small_predictor

FAST = RetryPolicy(attempts=2, base_delay_s=0.01, max_delay_s=0.05, timeout_s=1.0)
BOUND_S = 30.0  # every faulty call must end within this (asyncio.wait_for); the retries need well under
KINDS = ["local", "edge"]
DIM = 16
N_POINTS = 3000
BATCH = 100


def _docs() -> list[Document]:
    titles = [f"Topic {i}" for i in range(12)]
    return [Document(id=f"d{i}", title=t, text=f"{t} mentions {titles[(i + 1) % 12]}; it is about thing {i}.")
            for i, t in enumerate(titles)]


class DyingStore:
    """A real store that dies (is closed for real) after ``live_calls`` search_batch calls, or hangs instead."""

    def __init__(self, inner: VectorStore, live_calls: int, *, hang: bool = False) -> None:
        self.inner = inner
        self.name = f"dying({inner.name})"
        self.live_calls = live_calls
        self.hang = hang
        self.calls = 0

    async def _gate(self) -> None:
        self.calls += 1
        if self.calls > self.live_calls:
            if self.hang:
                await asyncio.Event().wait()
            if not getattr(self, "_dead", False):
                self._dead = True
                await self.inner.close()  # the real store goes away: later calls hit a closed client/shard
            raise StoreUnavailableError(f"{self.inner.name} is gone")

    async def ensure_collection(self, dim: int, encoder_name: str, *, sparse: bool = False) -> None:
        await self.inner.ensure_collection(dim, encoder_name, sparse=sparse)

    async def upsert(self, ids: Sequence[str], vectors: npt.ArrayLike, payloads: Sequence[Mapping[str, Any]], *,
                     sparse: Sequence[SparseVector] | None = None) -> None:
        await self.inner.upsert(ids, vectors, payloads, sparse=sparse)

    async def search(self, vector: npt.ArrayLike, k: int, filter: models.Filter | None = None,
                     exclude_ids: Sequence[str] = (), *, sparse: SparseVector | None = None) -> list[ScoredDoc]:
        await self._gate()
        return await self.inner.search(vector, k, filter=filter, exclude_ids=exclude_ids, sparse=sparse)

    async def search_batch(self, vectors: npt.ArrayLike, k: int,
                           filters: Sequence[models.Filter | None] | None = None,
                           exclude_ids: Sequence[Sequence[str]] | None = None, *,
                           sparse: Sequence[SparseVector | None] | None = None) -> list[list[ScoredDoc]]:
        await self._gate()
        return await self.inner.search_batch(vectors, k, filters=filters, exclude_ids=exclude_ids, sparse=sparse)

    async def count(self) -> int:
        return await self.inner.count()

    async def existing_ids(self, ids: Sequence[str]) -> set[str]:
        return await self.inner.existing_ids(ids)

    async def get_vectors(self, ids: Sequence[str]) -> dict[str, npt.NDArray[np.float32]]:
        await self._gate()
        return await self.inner.get_vectors(ids)

    async def close(self) -> None:
        if not getattr(self, "_dead", False):
            await self.inner.close()

    async def __aenter__(self) -> DyingStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def _indexed(kind: str, path: Path) -> VectorStore:
    enc = shared_encoder()
    store = open_store(f"{kind}:{path}")
    docs = _docs()
    await store.ensure_collection(enc.dim, enc.name)
    vecs = enc.encode([d.encoding_text for d in docs], batch_size=16, show_progress=False)
    await store.upsert([d.id for d in docs], vecs, [d.payload() for d in docs])
    return store


def _expansion() -> LinkExpansion:
    cfg = PredictorConfig(input_dim=384, output_dim=384, link_candidates=4, link_seeds=1, max_context_length=6)
    exp = LinkExpansion.for_config(cfg, LinkGraph.build(_docs()))
    assert exp is not None
    return exp


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("hang", [False, True], ids=["dies", "hangs"])
async def test_a_store_that_dies_or_hangs_after_the_link_search_gives_a_typed_error_in_bounded_time(
    kind: str, hang: bool, tmp_path: Path
) -> None:
    inner = await _indexed(kind, tmp_path / "s")
    before = await inner.count()
    store = DyingStore(inner, live_calls=1, hang=hang)  # the link seed search passes; what follows fails
    r = PredictiveRetriever(small_predictor(), shared_encoder(), store, retry=FAST, expansion=_expansion())
    t0 = time.monotonic()
    with pytest.raises(RetrieverError):
        await asyncio.wait_for(r.search(["user: tell me about Topic 3"], "what is thing 3?", k=3), BOUND_S)
    assert time.monotonic() - t0 < BOUND_S
    assert store.calls >= 2  # the link search ran, then the store failed
    await r.close()
    again = open_store(f"{kind}:{tmp_path / 's'}")  # the store reopens with every point
    enc = shared_encoder()
    await again.ensure_collection(enc.dim, enc.name)
    assert await again.count() == before
    await again.close()


_CHILD = textwrap.dedent("""
    import asyncio, sys
    import numpy as np
    from prime_retriever.stores.open import open_store

    async def main(spec, n, batch, optimize):
        store = open_store(spec)
        await store.ensure_collection({dim}, "fault-enc")
        rng = np.random.default_rng(0)
        vecs = rng.normal(size=(n, {dim})).astype(np.float32)
        for s in range(0, n, batch):
            ids = [f"p{{i}}" for i in range(s, min(n, s + batch))]
            await store.upsert(ids, vecs[s : s + len(ids)], [{{"text": i}} for i in ids])
            print("acked", s + len(ids), flush=True)
        if optimize:
            print("optimizing", flush=True)
            await store.optimize(in_subprocess=False)
            print("optimized", flush=True)
        await store.close()

    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"))
""").format(dim=DIM)


def _child(spec: str, optimize: bool) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", _CHILD, spec, str(N_POINTS), str(BATCH), "1" if optimize else "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _kill_after(proc: subprocess.Popen[str], until: Callable[[str], bool]) -> int:
    """SIGKILL ``proc`` once a line of its output satisfies ``until``; the number of points acknowledged by then."""
    acked = 0
    assert proc.stdout is not None
    deadline = time.monotonic() + 300
    for line in proc.stdout:
        if line.startswith("acked"):
            acked = int(line.split()[1])
        if until(line) or time.monotonic() > deadline:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
    return acked


async def _reopen_and_count(spec: str) -> tuple[int, set[str]]:
    store = open_store(spec)
    await store.ensure_collection(DIM, "fault-enc")
    ids = [f"p{i}" for i in range(N_POINTS)]
    present = await store.existing_ids(ids)
    count = await store.count()
    await store.close()
    return count, present


@pytest.mark.parametrize("kind", KINDS)
async def test_a_kill_mid_upsert_loses_no_acknowledged_point_and_resuming_duplicates_none(
    kind: str, tmp_path: Path
) -> None:
    spec = f"{kind}:{tmp_path / 's'}"
    acked = _kill_after(_child(spec, optimize=False), lambda line: line.startswith("acked") and
                        int(line.split()[1]) >= 5 * BATCH)
    assert BATCH * 5 <= acked < N_POINTS
    count, present = await _reopen_and_count(spec)
    assert {f"p{i}" for i in range(acked)} <= present  # every acknowledged point survived the kill
    assert count == len(present)  # and none twice
    proc = _child(spec, optimize=False)  # resume: the same ids again, from the start
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    count, present = await _reopen_and_count(spec)
    assert count == N_POINTS and len(present) == N_POINTS


async def test_a_kill_mid_optimize_leaves_a_store_that_opens_with_every_point(tmp_path: Path) -> None:
    spec = f"edge:{tmp_path / 's'}"
    proc = _child(spec, optimize=True)
    acked = _kill_after(proc, lambda line: line.startswith("optimizing"))
    assert acked == N_POINTS
    time.sleep(0.2)  # inside optimize() now (or already past it: the kill lands either way)
    count, present = await _reopen_and_count(spec)
    assert count == N_POINTS and len(present) == N_POINTS
    store = open_store(spec)
    await store.ensure_collection(DIM, "fault-enc")
    q = np.random.default_rng(0).normal(size=(DIM,)).astype(np.float32)
    assert len(await store.search(q, 5)) == 5
    await store.close()


_HOLDER = textwrap.dedent("""
    import asyncio, sys
    from prime_retriever.stores.open import open_store

    async def main(spec):
        store = open_store(spec)
        await store.ensure_collection(4, "fault-enc")
        print("open", flush=True)
        await asyncio.sleep(120)

    asyncio.run(main(sys.argv[1]))
""")


@pytest.mark.parametrize("kind", KINDS)
async def test_a_second_process_opening_the_same_store_gets_a_typed_error(kind: str, tmp_path: Path) -> None:
    spec = f"{kind}:{tmp_path / 's'}"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, spec], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        t0 = time.monotonic()
        with pytest.raises(StoreError, match="another process"):
            store = open_store(spec)  # local mode takes its folder's lock here, Edge on first use
            try:
                await asyncio.wait_for(store.ensure_collection(4, "fault-enc"), BOUND_S)
            finally:
                await store.close()
        assert time.monotonic() - t0 < BOUND_S
    finally:
        holder.kill()
        holder.wait(timeout=60)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


async def test_a_checkpoint_that_changes_on_disk_while_loaded_keeps_serving_and_is_refused_on_reload(
    tmp_path: Path
) -> None:
    torch.manual_seed(0)
    cfg = PredictorConfig(input_dim=384, output_dim=384, hidden_dim=32, num_layers=1, num_heads=2,
                          max_context_length=4, use_torch_compile=False)
    save_checkpoint(EmbeddingPredictor(cfg), tmp_path / "ck")
    store = await _indexed("local", tmp_path / "s")
    r = PredictiveRetriever.from_config(tmp_path / "ck", store=store, encoder=shared_encoder())
    async with r:
        before = await r.search(["user: hello"], "what is thing 3?", k=3)
        w = tmp_path / "ck" / WEIGHTS_FILE
        w.write_bytes(w.read_bytes()[: len(w.read_bytes()) // 2])  # truncated under the running retriever
        after = await asyncio.wait_for(r.search(["user: hello"], "what is thing 3?", k=3), BOUND_S)
        assert [h.doc_id for h in after] == [h.doc_id for h in before] and after.source == before.source
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "ck")
    with pytest.raises(PrimeError):
        PredictiveRetriever.from_config(tmp_path / "ck", store=":memory:", encoder=shared_encoder())
