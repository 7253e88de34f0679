"""What only ``QdrantStore`` does (local mode and server): encoder metadata and foreign collections, the
metadata wait, local folder locks, error translation, unreachable and hanging servers.

No mocks: the only fake is a raw TCP listener that never answers, standing in for a hung server.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import AsyncQdrantClient, models

from prime_retriever.errors import StoreError
from prime_retriever.stores.base import META_POINT_ID, StoreMeta, StoreUnavailableError
from prime_retriever.stores.qdrant import QdrantStore
from tests.prime_retriever.stores.test_contract import Corpus

# -- encoder metadata ----------------------------------------------------------------------------------


async def test_local_encoder_mismatch_raises(corpus: Corpus) -> None:
    client = AsyncQdrantClient(location=":memory:")
    first = QdrantStore("docs", client=client)
    await first.ensure_collection(corpus.dim, corpus.encoder_name)
    await first.ensure_collection(corpus.dim, corpus.encoder_name)  # same encoder: fine, idempotent
    with pytest.raises(StoreError) as err:
        await QdrantStore("docs", client=client).ensure_collection(768, "bge-base")
    msg = str(err.value)
    assert corpus.encoder_name in msg and "bge-base" in msg and str(corpus.dim) in msg and "768" in msg
    with pytest.raises(StoreError, match="other-encoder"):
        await QdrantStore("docs", client=client).ensure_collection(corpus.dim, "other-encoder")
    await first.close()
    assert await client.collection_exists("docs")  # a passed-in client is not closed by the store
    # A collection not made by prime_retriever has no metadata point: if it holds points, refuse it
    await client.create_collection(
        "foreign", vectors_config=models.VectorParams(size=corpus.dim, distance=models.Distance.COSINE)
    )
    await client.upsert("foreign", points=[models.PointStruct(id=1, vector=corpus.vectors[0].tolist())])
    foreign = QdrantStore("foreign", client=client)
    foreign.metadata_wait_s = 0.3
    with pytest.raises(StoreError, match="metadata"):
        await foreign.ensure_collection(corpus.dim, corpus.encoder_name)
    # an empty one of another dimension or distance is refused too
    for name, params in (("d", models.VectorParams(size=corpus.dim + 1, distance=models.Distance.COSINE)),
                         ("e", models.VectorParams(size=corpus.dim, distance=models.Distance.EUCLID))):
        await client.create_collection(name, vectors_config=params)
        other = QdrantStore(name, client=client)
        other.metadata_wait_s = 0.1
        with pytest.raises(StoreError, match="metadata"):
            await other.ensure_collection(corpus.dim, corpus.encoder_name)
    await client.close()


async def test_an_empty_collection_whose_metadata_was_never_written_is_adopted(corpus: Corpus) -> None:
    """A creation cut off after create_collection (a dropped connection before the metadata upsert)
    leaves an empty collection with no metadata: the next ensure_collection adopts it instead of
    refusing that collection forever."""
    client = AsyncQdrantClient(location=":memory:")
    await client.create_collection(
        "cut", vectors_config=models.VectorParams(size=corpus.dim, distance=models.Distance.COSINE)
    )
    store = QdrantStore("cut", client=client)
    store.metadata_wait_s = 0.1
    await store.ensure_collection(corpus.dim, corpus.encoder_name)
    await store.upsert(corpus.ids[:3], corpus.vectors[:3], [{}, {}, {}])
    assert await store.count() == 3
    with pytest.raises(StoreError, match="other-encoder"):  # it now records who built it
        await QdrantStore("cut", client=client).ensure_collection(corpus.dim, "other-encoder")
    await client.close()


async def test_a_collection_another_process_is_creating_is_awaited(corpus: Corpus) -> None:
    """Process A has created the collection but not yet written its metadata point: B waits for it
    (a short while) instead of calling the collection foreign."""
    client = AsyncQdrantClient(location=":memory:")
    await client.create_collection(
        "racing", vectors_config=models.VectorParams(size=corpus.dim, distance=models.Distance.COSINE)
    )
    b = QdrantStore("racing", client=client)
    waiting = asyncio.create_task(b.ensure_collection(corpus.dim, corpus.encoder_name))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    marker = np.zeros(corpus.dim, np.float32)
    marker[0] = 1.0
    meta = StoreMeta(encoder_name=corpus.encoder_name, dim=corpus.dim).to_payload()
    await client.upsert("racing", points=[models.PointStruct(id=META_POINT_ID, vector=marker.tolist(), payload=meta)])
    await asyncio.wait_for(waiting, 5.0)  # A's metadata arrived: B accepts the collection
    await b.upsert(corpus.ids[:2], corpus.vectors[:2], [{}, {}])
    assert await b.count() == 2
    await client.close()


async def test_a_local_folder_held_by_another_client_raises_store_error(tmp_path: Path) -> None:
    first = QdrantStore(path=str(tmp_path / "db"))
    with pytest.raises(StoreError, match="already accessed"):
        QdrantStore(path=str(tmp_path / "db"))
    await first.close()
    second = QdrantStore(path=str(tmp_path / "db"))  # released on close
    await second.close()


# -- unreachable / hanging server -----------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # nothing listens there any more


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP listener that accepts connections and never answers (a hung server)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    conns: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        srv.settimeout(0.1)
        while not done.is_set():
            try:
                conns.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    done.set()
    t.join()
    for c in conns:
        c.close()
    srv.close()


def test_grpc_and_rate_limit_errors_are_classified_by_their_code() -> None:
    """A gRPC status that means "not now" (UNAVAILABLE, RESOURCE_EXHAUSTED, ...) is retryable; one
    that is the request's own fault (INVALID_ARGUMENT, NOT_FOUND, ...) is permanent; the client's
    rate-limit answer (HTTP 429 / gRPC with Retry-After) is retryable."""
    import grpc as grpc_mod
    from qdrant_client.common.client_exceptions import ResourceExhaustedResponse

    from prime_retriever.stores.qdrant import _translate

    def rpc(code: grpc_mod.StatusCode) -> grpc_mod.aio.AioRpcError:
        return grpc_mod.aio.AioRpcError(code, grpc_mod.aio.Metadata(), grpc_mod.aio.Metadata(), details="detail")

    for code in (grpc_mod.StatusCode.UNAVAILABLE, grpc_mod.StatusCode.DEADLINE_EXCEEDED,
                 grpc_mod.StatusCode.RESOURCE_EXHAUSTED):
        assert isinstance(_translate(rpc(code), "s", "search"), StoreUnavailableError), code
    for code in (grpc_mod.StatusCode.INVALID_ARGUMENT, grpc_mod.StatusCode.NOT_FOUND,
                 grpc_mod.StatusCode.ALREADY_EXISTS, grpc_mod.StatusCode.PERMISSION_DENIED):
        err = _translate(rpc(code), "s", "search")
        assert type(err) is StoreError and code.name in str(err), code
    limited = _translate(ResourceExhaustedResponse("slow down", 3), "s", "search")
    assert isinstance(limited, StoreUnavailableError) and "retry after 3 s" in str(limited)


@pytest.mark.parametrize("grpc", [False, True])
async def test_unreachable_server_raises_unavailable(grpc: bool) -> None:
    port = _closed_port()
    store = QdrantStore(url=f"http://127.0.0.1:{port}", timeout=1, prefer_grpc=grpc, grpc_port=port)
    assert store.name.startswith("qdrant-server(http://127.0.0.1:")
    with pytest.raises(StoreUnavailableError, match="qdrant-server"):
        await store.ensure_collection(384, "x")
    await store.close()


async def test_hanging_server_times_out_as_unavailable(silent_server: int) -> None:
    store = QdrantStore(url=f"http://127.0.0.1:{silent_server}", timeout=1)
    with pytest.raises(StoreUnavailableError):
        await store.ensure_collection(384, "x")
    await store.close()
