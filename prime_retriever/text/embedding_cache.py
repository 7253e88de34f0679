"""On-disk embedding cache, so that a corpus is encoded once across runs and across processes.

Layout: one directory per encoder under the cache root, named after the sanitised encoder name,
its dimension and a short hash of the exact name (so two names that sanitise alike never share a
directory)::

    <root>/sentence-transformers_all-MiniLM-L6-v2-384d-1a2b3c4d/
        shard-<time_ns>-<pid>-<rand>.npz   # keys: (n, 32) uint8 sha256 of the text; vectors: (n, D) float32

Each shard is written once, atomically (temp file in the same directory, fsync, ``os.replace``),
and never modified, so a reader sees either a whole shard or none, and concurrent writers never
clash. Shards are loaded lazily into an in-memory dict on first use; shards written later by
another process are picked up when a lookup misses. A shard that cannot be read or fails
validation (shape, dtype, finite, unit norm) is skipped with a warning: the cache never crashes on
it and never returns its vectors. :meth:`EmbeddingCache.compact` merges many small shards into one.

:class:`CachedEncoder` wraps any :class:`~prime_retriever.text.encoders.TextEncoder` with the cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import tempfile
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from prime_retriever.errors import EncoderError
from prime_retriever.text.encoders import FloatMatrix, TextEncoder, check_texts

__all__ = ["CachedEncoder", "EmbeddingCache", "MemoryEmbeddingCache", "default_cache_dir", "text_key"]

_KEY_BYTES = 32  # sha256 digest
_NORM_TOLERANCE = 1e-3  # cached rows must be L2-normalised to within this
_SHARD_GLOB = "shard-*.npz"


def default_cache_dir() -> Path:
    """``$PRIME_CACHE_DIR`` if set, else ``~/.cache/prime_retriever``."""
    env = os.environ.get("PRIME_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "prime_retriever"


def text_key(text: str) -> bytes:
    """The cache key of ``text``: the 32-byte sha256 of its UTF-8 encoding."""
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).digest()


def _encoder_dirname(encoder_name: str, dim: int) -> str:
    """A filesystem-safe directory name unique to ``(encoder_name, dim)``."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", encoder_name).strip("._-")[:80] or "encoder"
    digest = hashlib.sha256(encoder_name.encode("utf-8", errors="surrogatepass")).hexdigest()[:8]
    return f"{safe}-{dim}d-{digest}"


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (best effort: not every OS can open a directory)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _valid_rows(vectors: npt.NDArray[np.generic], dim: int) -> str | None:
    """Why ``vectors`` is not a usable ``(n, dim)`` float32 block of unit rows, or ``None`` if it is."""
    if vectors.dtype != np.float32:
        return f"dtype {vectors.dtype}, expected float32"
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        return f"shape {vectors.shape}, expected (n, {dim})"
    if not np.isfinite(vectors).all():
        return "non-finite values"
    norms = np.linalg.norm(vectors, axis=1)  # (n,)
    if vectors.shape[0] and not np.allclose(norms, 1.0, atol=_NORM_TOLERANCE):
        return "rows are not L2-normalised"
    return None


class _EncoderShards:
    """The shards of one ``(encoder_name, dim)``: a directory on disk and a dict in memory."""

    def __init__(self, directory: Path, dim: int) -> None:
        self.directory = directory
        self.dim = dim
        self.rows: dict[bytes, FloatMatrix] = {}  # key -> (D,) float32 view into a loaded shard
        self.seen: set[str] = set()  # shard file names already loaded (or rejected)
        self.loaded_once = False

    def refresh(self) -> None:
        """Load every shard file not seen yet (written by us earlier, or by another process)."""
        self.loaded_once = True
        if not self.directory.is_dir():
            return
        for path in sorted(self.directory.glob(_SHARD_GLOB)):
            if path.name in self.seen:
                continue
            self.seen.add(path.name)
            self._load(path)

    def _load(self, path: Path) -> None:
        """Load one shard into :attr:`rows`, or warn and skip it if it is unreadable or invalid.

        A shard that could not be *opened* (an ``OSError`` such as too many open files) is not
        marked seen: a later refresh tries it again, and :meth:`EmbeddingCache.compact` keeps it.
        """
        try:
            with np.load(path, allow_pickle=False) as data:
                keys = np.asarray(data["keys"])  # (n, 32) uint8
                vectors = np.asarray(data["vectors"])  # (n, D) float32
        except FileNotFoundError:
            return  # removed by a concurrent compact(): its rows live in the merged shard
        except OSError as exc:  # the file may be fine: retry it later, never delete it
            self.seen.discard(path.name)
            warnings.warn(f"embedding cache: cannot read shard {path} now (will retry): {exc!r}", stacklevel=4)
            return
        except Exception as exc:  # zipfile.BadZipFile, ValueError, KeyError, EOFError: an invalid file
            warnings.warn(f"embedding cache: skipping unreadable shard {path}: {exc!r}", stacklevel=4)
            return
        problem = _valid_rows(vectors, self.dim)
        if problem is None and (keys.dtype != np.uint8 or keys.shape != (vectors.shape[0], _KEY_BYTES)):
            problem = f"keys of dtype {keys.dtype} and shape {keys.shape}, expected ({vectors.shape[0]}, 32) uint8"
        if problem is not None:
            warnings.warn(f"embedding cache: skipping invalid shard {path}: {problem}", stacklevel=4)
            return
        vectors = np.ascontiguousarray(vectors)
        vectors.setflags(write=False)
        for i in range(keys.shape[0]):
            self.rows[keys[i].tobytes()] = vectors[i]

    def write(self, keys: list[bytes], vectors: FloatMatrix) -> Path:
        """Write a new shard atomically and add its rows to memory; returns the shard path."""
        self.directory.mkdir(parents=True, exist_ok=True)
        key_array = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), _KEY_BYTES)  # (n, 32)
        name = f"shard-{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}.npz"
        final = self.directory / name
        fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix=".npz.part", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez(handle, keys=key_array, vectors=vectors)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
            raise
        _fsync_dir(self.directory)
        self.seen.add(name)
        frozen = vectors.copy()
        frozen.setflags(write=False)
        for i, key in enumerate(keys):
            self.rows[key] = frozen[i]
        return final


class EmbeddingCache:
    """An on-disk cache of text embeddings keyed by ``(encoder name, dim, sha256(text))``.

    Safe to share between processes and threads: shards are immutable and written atomically.
    Stored and returned vectors are float32 L2-normalised rows.

    Args:
        root: cache directory; ``None`` uses :func:`default_cache_dir`. Created on first write.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root: Path = Path(root).expanduser() if root is not None else default_cache_dir()
        self._encoders: dict[tuple[str, int], _EncoderShards] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"EmbeddingCache(root={str(self.root)!r})"

    def directory(self, encoder_name: str, dim: int) -> Path:
        """The directory holding the shards of ``(encoder_name, dim)``."""
        return self.root / _encoder_dirname(encoder_name, dim)

    def _shards(self, encoder_name: str, dim: int) -> _EncoderShards:
        if dim <= 0:
            raise EncoderError(f"embedding dim must be positive, got {dim}")
        key = (encoder_name, dim)
        shards = self._encoders.get(key)
        if shards is None:
            shards = self._encoders[key] = _EncoderShards(self.directory(encoder_name, dim), dim)
        if not shards.loaded_once:
            shards.refresh()
        return shards

    def lookup(self, encoder_name: str, dim: int, texts: Sequence[str]) -> tuple[FloatMatrix, npt.NDArray[np.bool_]]:
        """Cached vectors of ``texts``.

        Returns:
            ``(vectors, found)``: vectors of shape ``(len(texts), dim)`` float32 (rows of texts not
            in the cache are zero) and ``found`` of shape ``(len(texts),)`` bool.
        """
        keys = [text_key(t) for t in texts]
        vectors = np.zeros((len(keys), dim), dtype=np.float32)  # (n, D)
        found = np.zeros(len(keys), dtype=np.bool_)  # (n,)
        with self._lock:
            shards = self._shards(encoder_name, dim)
            if any(k not in shards.rows for k in keys):
                shards.refresh()  # another process may have written what we miss
            for i, key in enumerate(keys):
                row = shards.rows.get(key)
                if row is not None:
                    vectors[i] = row
                    found[i] = True
        return vectors, found

    def store(self, encoder_name: str, dim: int, texts: Sequence[str], vectors: FloatMatrix) -> Path | None:
        """Add ``texts`` with their ``vectors`` (shape ``(len(texts), dim)``) as one new shard.

        Texts already cached (or repeated) are not written again. Returns the new shard's path, or
        ``None`` if there was nothing new to write.

        Raises:
            EncoderError: ``vectors`` is not ``(len(texts), dim)`` finite float32 with unit rows.
        """
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            raise EncoderError(f"cannot cache {vectors.shape} vectors for {len(texts)} texts")
        problem = _valid_rows(vectors, dim)
        if problem is not None:
            raise EncoderError(f"refusing to cache embeddings for {encoder_name!r}: {problem}")
        with self._lock:
            shards = self._shards(encoder_name, dim)
            new_keys: list[bytes] = []
            new_rows: list[int] = []
            pending: set[bytes] = set()
            for i, text in enumerate(texts):
                key = text_key(text)
                if key not in shards.rows and key not in pending:
                    pending.add(key)
                    new_keys.append(key)
                    new_rows.append(i)
            if not new_keys:
                return None
            return shards.write(new_keys, np.ascontiguousarray(vectors[new_rows]))

    def count(self, encoder_name: str, dim: int) -> int:
        """Number of distinct texts cached for ``(encoder_name, dim)`` (after loading new shards)."""
        with self._lock:
            shards = self._shards(encoder_name, dim)
            shards.refresh()
            return len(shards.rows)

    def compact(self, encoder_name: str, dim: int) -> Path | None:
        """Merge all valid shards of ``(encoder_name, dim)`` into one, then delete the old ones.

        Invalid shards are deleted too (their rows were never served). Safe while other processes
        read: they either still see the old shards or find the merged one. Returns the merged
        shard's path, or ``None`` if the cache is empty.
        """
        with self._lock:
            shards = self._shards(encoder_name, dim)
            shards.refresh()
            old = [p for p in shards.directory.glob(_SHARD_GLOB) if p.name in shards.seen]
            if not shards.rows:
                return None
            keys = list(shards.rows)
            vectors = np.stack([shards.rows[k] for k in keys])  # (n, D)
            merged = shards.write(keys, vectors)
            for path in old:
                with contextlib.suppress(OSError):
                    path.unlink()
            shards.seen = {merged.name}
            return merged


class MemoryEmbeddingCache:
    """A bounded in-memory LRU with :class:`EmbeddingCache`'s ``lookup``/``store`` interface.

    The retriever's tier for the texts of live conversations: a PREPAREd context is not encoded
    again by its search, and nothing of a conversation is written to disk. Rows that are not
    finite are not kept (a search with such a text fails alone, and is not served again).
    """

    def __init__(self, max_texts: int) -> None:
        if max_texts < 1:
            raise ValueError(f"max_texts must be >= 1, got {max_texts}")
        self.max_texts = max_texts
        self._rows: OrderedDict[tuple[str, int, str], npt.NDArray[np.float32]] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MemoryEmbeddingCache(max_texts={self.max_texts})"

    def __len__(self) -> int:
        return len(self._rows)

    def lookup(self, encoder_name: str, dim: int, texts: Sequence[str]) -> tuple[FloatMatrix, npt.NDArray[np.bool_]]:
        """``(vectors (n, dim), found (n,))``: the cached rows of ``texts``; zeros where not found."""
        vectors = np.zeros((len(texts), dim), np.float32)  # n × D
        found = np.zeros(len(texts), bool)
        with self._lock:
            for i, text in enumerate(texts):
                key = (encoder_name, dim, text)
                row = self._rows.get(key)
                if row is not None:
                    self._rows.move_to_end(key)
                    vectors[i] = row
                    found[i] = True
        return vectors, found

    def store(self, encoder_name: str, dim: int, texts: Sequence[str], vectors: FloatMatrix) -> None:
        """Keep the finite rows of ``vectors`` (shape ``(len(texts), dim)``), evicting the least recent."""
        with self._lock:
            for text, row in zip(texts, np.asarray(vectors, dtype=np.float32), strict=True):
                if row.shape != (dim,) or not np.isfinite(row).all():
                    continue
                key = (encoder_name, dim, text)
                self._rows[key] = row.copy()
                self._rows.move_to_end(key)
                if len(self._rows) > self.max_texts:
                    self._rows.popitem(last=False)


class CachedEncoder:
    """A :class:`~prime_retriever.text.encoders.TextEncoder` that serves repeated texts from an
    :class:`EmbeddingCache` and sends only the missing (deduplicated) texts to ``encoder``, in one call.

    Counters (cumulative, for monitoring and tests): :attr:`encode_calls` (calls to the inner
    encoder), :attr:`encoded_texts` (texts the inner encoder encoded), :attr:`cache_hits` (texts
    served from the cache, including repeats of a text encoded in the same call).
    """

    def __init__(self, encoder: TextEncoder, cache: EmbeddingCache | MemoryEmbeddingCache | None = None) -> None:
        self.encoder: TextEncoder = encoder
        self.cache: EmbeddingCache | MemoryEmbeddingCache = cache if cache is not None else EmbeddingCache()
        self.encode_calls = 0
        self.encoded_texts = 0
        self.cache_hits = 0

    @property
    def name(self) -> str:
        """The inner encoder's name (caching does not change the embeddings)."""
        return self.encoder.name

    @property
    def dim(self) -> int:
        """The inner encoder's dimension."""
        return self.encoder.dim

    def __repr__(self) -> str:
        return f"CachedEncoder({self.encoder!r}, {self.cache!r})"

    def encode(self, texts: Sequence[str], batch_size: int = 64, show_progress: bool | None = None) -> FloatMatrix:
        """Encode ``texts`` (shape ``(len(texts), dim)`` float32, unit rows), using the cache.

        Raises:
            EncoderError: bad input, or the inner encoder returned the wrong shape or bad vectors.
        """
        items = check_texts(texts)  # batch_size is the inner encoder's to check
        name, dim = self.encoder.name, self.encoder.dim
        vectors, found = self.cache.lookup(name, dim, items)  # (n, D), (n,)
        missing: dict[str, list[int]] = {}  # unique missing text -> its positions in items
        for pos in np.flatnonzero(~found).tolist():
            missing.setdefault(items[pos], []).append(pos)
        self.cache_hits += len(items) - len(missing)
        if missing:
            unique = list(missing)
            fresh = np.asarray(self.encoder.encode(unique, batch_size=batch_size, show_progress=show_progress))
            self.encode_calls += 1
            self.encoded_texts += len(unique)
            if fresh.shape != (len(unique), dim):
                raise EncoderError(
                    f"encoder {name!r} returned shape {fresh.shape} for {len(unique)} texts, "
                    f"expected ({len(unique)}, {dim})"
                )
            fresh = fresh.astype(np.float32, copy=False)  # (m, D)
            try:
                self.cache.store(name, dim, unique, fresh)
            except OSError as exc:  # a full or read-only disk: the vectors are still good, only not cached
                warnings.warn(f"embedding cache: could not write {len(unique)} embeddings under "
                              f"{self.cache!r}: {exc!r}", stacklevel=2)
            for j, text in enumerate(unique):
                vectors[missing[text]] = fresh[j]
        return vectors
