"""The unit of retrieval: a corpus document, the text the Y-Encoder sees for it, and its scope."""

from __future__ import annotations

from dataclasses import dataclass

from qdrant_client import models

SCOPE_KEY = "scope"


@dataclass(frozen=True)
class Document:
    """One retrievable passage.

    ``id`` is the stable identifier (the Wikipedia title for HotpotQA paragraphs), ``text`` the
    passage, and ``title`` an optional heading that is prepended when the passage is encoded.
    ``scope`` optionally names the private collection the document belongs to (one user's or one
    conversation's memory, e.g. a LoCoMo conversation); a search restricted with
    :func:`scope_filter` sees only that scope's documents.
    """

    id: str
    text: str
    title: str = ""
    scope: str = ""

    @property
    def encoding_text(self) -> str:
        """The exact string given to the Y-Encoder: ``"title: text"``, or the text alone."""
        return f"{self.title}: {self.text}" if self.title else self.text

    def payload(self) -> dict[str, str]:
        """The Qdrant payload stored with the document's point (``scope`` only when set)."""
        out = {"doc_id": self.id, "title": self.title, "text": self.text}
        if self.scope:
            out[SCOPE_KEY] = self.scope
        return out


def scope_filter(scope: str) -> models.Filter:
    """The Qdrant filter that keeps only the documents of ``scope`` (a non-empty string)."""
    if not isinstance(scope, str) or not scope:
        raise ValueError(f"scope must be a non-empty string, got {scope!r}")
    return models.Filter(must=[models.FieldCondition(key=SCOPE_KEY, match=models.MatchValue(value=scope))])
