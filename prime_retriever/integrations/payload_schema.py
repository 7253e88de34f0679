"""Where a framework's Qdrant collection keeps a document's id, title, text and vector.

Each framework writes its own layout:

* LlamaIndex (``QdrantVectorStore``): point id = node id (a UUID); the node as a JSON string under
  ``_node_content`` (its text under ``text``); flat metadata keys beside it; the dense vector named
  ``text-dense`` (older collections: unnamed);
* Haystack (``QdrantDocumentStore``): point id = uuid5 of the Haystack document id, which the payload
  keeps under ``id``; the text under ``content``, metadata under ``meta``; the vector unnamed (named
  ``text-dense`` when the store keeps sparse vectors too);
* LangChain (``langchain_qdrant.QdrantVectorStore``): point id = the document id (a UUID); the text
  under ``page_content``, metadata under ``metadata``; the vector unnamed by default.

A :class:`PayloadSchema` names these places; the reader never needs the framework installed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from prime_retriever import Document

__all__ = [
    "PayloadSchema",
    "get_path",
    "haystack_schema",
    "langchain_schema",
    "llama_index_schema",
    "parse_point_id",
]

#: A Qdrant point id as the client takes it: an unsigned integer or a UUID string.
PointId = int | str


def parse_point_id(doc_id: str) -> PointId:
    """The Qdrant point id a string doc id stands for: an integer id comes back as ``int``."""
    return int(doc_id) if doc_id.isdigit() else doc_id


def get_path(payload: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """``payload[path[0]][path[1]]...``, or ``None`` where a key is missing.

    A string met before the last key is parsed as JSON: LlamaIndex keeps the whole node as a JSON
    string under ``_node_content``.
    """
    cur: Any = payload
    for i, key in enumerate(path):
        if isinstance(cur, str) and i > 0:
            try:
                cur = json.loads(cur)
            except ValueError:
                return None
        if not isinstance(cur, Mapping) or key not in cur:
            return None
        cur = cur[key]
    return cur


@dataclass(frozen=True)
class PayloadSchema:
    """One framework's layout of a document point.

    Attributes:
        framework: a name for messages (``"llama_index"``, ``"haystack"``, ``"langchain"``, ``"prime"``).
        vector_name: the dense vector's name; ``None`` for the collection's unnamed vector.
        title_path: where the title is (payload keys, outermost first).
        text_path: where the text is.
        id_key: the payload key holding the framework's document id; ``None``: the point id is the doc id.
        id_to_point: the point id of a framework document id (Haystack's uuid5); needed with ``id_key``.
        strip_title: a text that starts with ``"{title}: "`` is read without it (a LangChain page holds
            the title, since LangChain embeds the page alone), so titles link as in prime's own corpus.
    """

    framework: str
    vector_name: str | None
    title_path: tuple[str, ...]
    text_path: tuple[str, ...]
    id_key: str | None = None
    id_to_point: Callable[[str], PointId] | None = None
    strip_title: bool = False

    def __post_init__(self) -> None:
        if self.id_key is not None and self.id_to_point is None:
            raise ValueError(f"{self.framework}: a schema with id_key={self.id_key!r} needs id_to_point")

    def doc_id(self, point_id: PointId, payload: Mapping[str, Any]) -> str:
        """The doc id of a point: the framework's id where the payload keeps one, else the point id."""
        if self.id_key is not None:
            found = payload.get(self.id_key)
            if isinstance(found, str) and found:
                return found
        return str(point_id)

    def point_id(self, doc_id: str) -> PointId:
        """The Qdrant point id of ``doc_id`` (the inverse of :meth:`doc_id`)."""
        if self.id_to_point is not None:
            return self.id_to_point(doc_id)
        return parse_point_id(doc_id)

    def title(self, payload: Mapping[str, Any]) -> str:
        found = get_path(payload, self.title_path)
        return found if isinstance(found, str) else ""

    def text(self, payload: Mapping[str, Any]) -> str:
        found = get_path(payload, self.text_path)
        if not isinstance(found, str):
            return ""
        title = self.title(payload)
        return found.removeprefix(f"{title}: ") if self.strip_title and title else found

    def document(self, point_id: PointId, payload: Mapping[str, Any]) -> Document:
        """The point as a prime :class:`~prime_retriever.Document` (empty title/text where the payload has none)."""
        return Document(id=self.doc_id(point_id, payload), text=self.text(payload), title=self.title(payload))


def _name(vector_name: str | None) -> str | None:
    # "" is how LangChain spells the unnamed vector
    return vector_name or None


def llama_index_schema(dense_vector_name: str | None = "text-dense", title_key: str = "title") -> PayloadSchema:
    """LlamaIndex's ``QdrantVectorStore`` (pass its ``dense_vector_name``; ``None`` for a legacy unnamed one)."""
    return PayloadSchema("llama_index", _name(dense_vector_name), (title_key,), ("_node_content", "text"))


def haystack_schema(
    id_to_point: Callable[[str], PointId], *, use_sparse_embeddings: bool = False, title_key: str = "title"
) -> PayloadSchema:
    """Haystack's ``QdrantDocumentStore``; ``id_to_point`` is its ``convert_id``."""
    return PayloadSchema(
        "haystack", "text-dense" if use_sparse_embeddings else None, ("meta", title_key), ("content",),
        id_key="id", id_to_point=id_to_point,
    )


def langchain_schema(
    vector_name: str | None = "", content_key: str = "page_content", metadata_key: str = "metadata",
    title_key: str = "title",
) -> PayloadSchema:
    """``langchain_qdrant.QdrantVectorStore`` (pass its ``vector_name`` and payload keys); a page's
    ``"title: "`` prefix is not read as text."""
    return PayloadSchema("langchain", _name(vector_name), (metadata_key, title_key), (content_key,),
                         strip_title=True)
