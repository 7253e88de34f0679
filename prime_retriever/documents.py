"""The unit of retrieval: a corpus document, and the text the Y-Encoder sees for it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Document:
    """One retrievable passage.

    ``id`` is the stable identifier (the Wikipedia title for HotpotQA paragraphs), ``text`` the
    passage, and ``title`` an optional heading that is prepended when the passage is encoded.
    """

    id: str
    text: str
    title: str = ""

    @property
    def encoding_text(self) -> str:
        """The exact string given to the Y-Encoder: ``"title: text"``, or the text alone."""
        return f"{self.title}: {self.text}" if self.title else self.text

    def payload(self) -> dict[str, str]:
        """The Qdrant payload stored with the document's point."""
        return {"doc_id": self.id, "title": self.title, "text": self.text}
