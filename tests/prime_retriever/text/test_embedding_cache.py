"""Tests of the on-disk embedding cache and CachedEncoder, with the real MiniLM (no mocks)."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from prime_retriever.errors import EncoderError
from prime_retriever.text.embedding_cache import CachedEncoder, EmbeddingCache, default_cache_dir, text_key
from prime_retriever.text.encoders import HFTextEncoder, TextEncoder

TEXTS = [
    "Paris is the capital of France.",
    "The Nile is the longest river in Africa.",
    "Marie Curie won two Nobel prizes.",
    "Mount Everest is 8,849 metres high.",
]


@pytest.fixture(scope="module")
def encoder() -> HFTextEncoder:
    return HFTextEncoder()


def shard_files(cache: EmbeddingCache, encoder: TextEncoder) -> list[Path]:
    return sorted(cache.directory(encoder.name, encoder.dim).glob("shard-*.npz"))


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PRIME_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    assert EmbeddingCache().root == tmp_path / "c"
    monkeypatch.delenv("PRIME_CACHE_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "prime_retriever"


def test_cached_vectors_identical_without_reencoding(encoder: HFTextEncoder, tmp_path: Path) -> None:
    disk = EmbeddingCache(tmp_path)
    cached = CachedEncoder(encoder, disk)
    assert isinstance(cached, TextEncoder)
    assert (cached.name, cached.dim) == (encoder.name, encoder.dim)

    first = cached.encode(TEXTS)
    assert (cached.encode_calls, cached.encoded_texts, cached.cache_hits) == (1, 4, 0)
    np.testing.assert_allclose(first, encoder.encode(TEXTS), atol=1e-6)

    second = cached.encode(TEXTS[::-1])
    assert (cached.encode_calls, cached.encoded_texts, cached.cache_hits) == (1, 4, 4)
    np.testing.assert_array_equal(second, first[::-1])
    assert second.dtype == np.float32 and second.shape == (4, 384)
    assert len(shard_files(disk, encoder)) == 1
    # Only shards in the directory: the temp file was renamed away.
    assert sorted(p.name for p in shard_files(disk, encoder)) == sorted(
        os.listdir(disk.directory(encoder.name, encoder.dim))
    )


def test_only_missing_deduplicated_texts_are_encoded(encoder: HFTextEncoder, tmp_path: Path) -> None:
    disk = EmbeddingCache(tmp_path)
    cached = CachedEncoder(encoder, disk)
    cached.encode(TEXTS[:2])
    mixed = [TEXTS[2], TEXTS[0], TEXTS[2], TEXTS[3], TEXTS[1], TEXTS[3]]
    out = cached.encode(mixed)
    assert cached.encode_calls == 2
    assert cached.encoded_texts == 2 + 2  # TEXTS[2] and TEXTS[3], once each
    assert cached.cache_hits == 4  # TEXTS[0], TEXTS[1] and the two repeats
    np.testing.assert_allclose(out, encoder.encode(mixed), atol=1e-6)
    np.testing.assert_array_equal(out[0], out[2])
    assert len(shard_files(disk, encoder)) == 2
    assert disk.count(encoder.name, encoder.dim) == 4


def test_empty_input(encoder: HFTextEncoder, tmp_path: Path) -> None:
    cached = CachedEncoder(encoder, EmbeddingCache(tmp_path))
    out = cached.encode([])
    assert out.shape == (0, 384) and out.dtype == np.float32
    assert cached.encode_calls == 0
    assert not tmp_path.joinpath("x").exists()


def test_reuse_across_instances_and_processes(encoder: HFTextEncoder, tmp_path: Path) -> None:
    reference = CachedEncoder(encoder, EmbeddingCache(tmp_path)).encode(TEXTS)

    # A fresh cache object (no shared memory) over the same directory encodes nothing.
    again = CachedEncoder(encoder, EmbeddingCache(tmp_path))
    np.testing.assert_array_equal(again.encode(TEXTS), reference)
    assert (again.encode_calls, again.encoded_texts, again.cache_hits) == (0, 0, 4)

    # Another Python process finds every vector, bit for bit.
    script = (
        "import sys, numpy as np\n"
        "from prime_retriever.text.embedding_cache import EmbeddingCache\n"
        "texts = sys.stdin.read().split('\\n')\n"
        f"vectors, found = EmbeddingCache(sys.argv[1]).lookup({encoder.name!r}, {encoder.dim}, texts)\n"
        "np.save(sys.argv[2], vectors)\n"
        "print(int(found.sum()))\n"
    )
    out_file = tmp_path / "child.npy"
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), str(out_file)],
        input="\n".join(TEXTS),
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "4"
    np.testing.assert_array_equal(np.load(out_file), reference)


def test_shard_written_by_another_writer_is_picked_up(encoder: HFTextEncoder, tmp_path: Path) -> None:
    reader = CachedEncoder(encoder, EmbeddingCache(tmp_path))
    reader.encode(TEXTS[:1])  # loads the (empty) directory once
    writer = CachedEncoder(encoder, EmbeddingCache(tmp_path))
    writer.encode(TEXTS[1:])
    reader.encode(TEXTS)  # must find TEXTS[1:] in the writer's new shard
    assert reader.encoded_texts == 1
    assert reader.cache_hits == 4  # its own TEXTS[0] and the writer's three


def test_truncated_shard_is_ignored(encoder: HFTextEncoder, tmp_path: Path) -> None:
    reference = CachedEncoder(encoder, EmbeddingCache(tmp_path)).encode(TEXTS)
    (shard,) = shard_files(EmbeddingCache(tmp_path), encoder)
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])  # a half-written file

    cached = CachedEncoder(encoder, EmbeddingCache(tmp_path))
    with pytest.warns(UserWarning, match="unreadable shard"):
        out = cached.encode(TEXTS)
    assert cached.encoded_texts == 4  # nothing was served from the broken shard
    np.testing.assert_allclose(out, reference, atol=1e-6)
    # The repaired rows are in a new shard: a later process needs no encoding.
    later = CachedEncoder(encoder, EmbeddingCache(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_allclose(later.encode(TEXTS), reference, atol=1e-6)
    assert later.encoded_texts == 0


@pytest.mark.parametrize(
    "problem",
    ["nan", "wrong_dim", "float64", "not_normalised", "bad_keys", "garbage"],
)
def test_invalid_shards_are_skipped(encoder: HFTextEncoder, tmp_path: Path, problem: str) -> None:
    cache = EmbeddingCache(tmp_path)
    directory = cache.directory(encoder.name, encoder.dim)
    directory.mkdir(parents=True)
    keys = np.frombuffer(b"".join(text_key(t) for t in TEXTS), dtype=np.uint8).reshape(4, 32)
    vectors = np.full((4, 384), 1 / np.sqrt(384), dtype=np.float32)
    if problem == "nan":
        vectors[1, 3] = np.nan
    elif problem == "wrong_dim":
        vectors = np.full((4, 768), 1 / np.sqrt(768), dtype=np.float32)
    elif problem == "float64":
        vectors = vectors.astype(np.float64)
    elif problem == "not_normalised":
        vectors *= 3
    elif problem == "bad_keys":
        keys = keys[:, :16]
    path = directory / "shard-00000000000000000001-1-deadbeef.npz"
    if problem == "garbage":
        path.write_bytes(b"this is not a zip file")
    else:
        np.savez(path, keys=keys, vectors=vectors)

    with pytest.warns(UserWarning, match="shard"):
        found_vectors, found = cache.lookup(encoder.name, encoder.dim, TEXTS)
    assert not found.any()
    assert not found_vectors.any()


def test_store_validates_vectors(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    good = np.eye(2, 8, dtype=np.float32)  # (2, 8) unit rows
    with pytest.raises(EncoderError):
        cache.store("enc", 8, ["a"], good)  # 2 rows for 1 text
    with pytest.raises(EncoderError, match="normalised"):
        cache.store("enc", 8, ["a", "b"], good * 2)
    with pytest.raises(EncoderError, match="shape"):
        cache.store("enc", 4, ["a", "b"], good)
    assert cache.store("enc", 8, ["a", "b"], good) is not None
    assert cache.store("enc", 8, ["b", "a"], good) is None  # nothing new
    assert cache.count("enc", 8) == 2


def test_encoders_and_dims_do_not_share_entries(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    cache.store("org/model", 2, ["t"], np.array([[1.0, 0.0]], dtype=np.float32))
    cache.store("org_model", 2, ["t"], np.array([[0.0, 1.0]], dtype=np.float32))
    cache.store("org/model", 3, ["t"], np.array([[0.0, 0.0, 1.0]], dtype=np.float32))
    assert cache.directory("org/model", 2) != cache.directory("org_model", 2)
    v1, _ = EmbeddingCache(tmp_path).lookup("org/model", 2, ["t"])
    v2, _ = EmbeddingCache(tmp_path).lookup("org_model", 2, ["t"])
    v3, _ = EmbeddingCache(tmp_path).lookup("org/model", 3, ["t"])
    np.testing.assert_array_equal(v1, [[1.0, 0.0]])
    np.testing.assert_array_equal(v2, [[0.0, 1.0]])
    np.testing.assert_array_equal(v3, [[0.0, 0.0, 1.0]])


def test_compact_merges_shards(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    eye = np.eye(4, dtype=np.float32)
    for i in range(4):
        cache.store("enc", 4, [f"text {i}"], eye[i : i + 1])
    assert len(list(cache.directory("enc", 4).glob("shard-*.npz"))) == 4
    merged = cache.compact("enc", 4)
    assert merged is not None
    assert list(cache.directory("enc", 4).glob("shard-*.npz")) == [merged]
    vectors, found = EmbeddingCache(tmp_path).lookup("enc", 4, [f"text {i}" for i in range(4)])
    assert found.all()
    np.testing.assert_array_equal(vectors, eye)


def test_compact_keeps_a_shard_it_could_not_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A shard that fails to open with an OSError (e.g. too many open files) may be fine: it is
    retried by the next lookup and never deleted by compact()."""
    writer = EmbeddingCache(tmp_path)
    eye = np.eye(4, dtype=np.float32)
    for i in range(2):
        writer.store("enc", 4, [f"text {i}"], eye[i : i + 1])
    real_load = np.load
    (first, _) = sorted(writer.directory("enc", 4).glob("shard-*.npz"))

    def flaky_load(file: Any, *args: Any, **kwargs: Any) -> Any:
        if Path(str(file)) == first:
            raise OSError(24, "Too many open files")
        return real_load(file, *args, **kwargs)

    cache = EmbeddingCache(tmp_path)
    monkeypatch.setattr(np, "load", flaky_load)
    with pytest.warns(UserWarning, match="will retry"):
        merged = cache.compact("enc", 4)  # merges the shard it could read, keeps the other
    monkeypatch.setattr(np, "load", real_load)
    assert merged is not None
    assert sorted(cache.directory("enc", 4).glob("shard-*.npz")) == sorted([first, merged])
    vectors, found = EmbeddingCache(tmp_path).lookup("enc", 4, ["text 0", "text 1"])
    assert found.all()
    np.testing.assert_array_equal(vectors, eye[:2])


def test_an_unwritable_cache_still_returns_the_vectors(encoder: HFTextEncoder, tmp_path: Path) -> None:
    """The cache is an optimisation: when it cannot be written, encode warns and returns the vectors."""
    root = tmp_path / "not-a-directory"
    root.write_text("a file where the cache folder should be")
    cached = CachedEncoder(encoder, EmbeddingCache(root))
    with pytest.warns(UserWarning, match="could not write"):
        out = cached.encode(TEXTS)
    np.testing.assert_allclose(out, encoder.encode(TEXTS), atol=1e-5)
    assert cached.encoded_texts == len(TEXTS)
