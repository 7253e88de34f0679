"""Title-mention links between corpus documents, and the candidate documents they suggest.

A document *links to* another when its text mentions the other's title (Wikipedia-style corpora:
HotpotQA, MuSiQue). The graph is built from the corpus alone (no questions, no labels):

- a title is normalised by dropping parenthesised qualifiers (``"Michael Jackson (writer)"`` →
  ``"michael jackson"``) and lower-casing; titles shorter than ``min_title_chars`` or made of
  digits only are not linked to;
- a document mentioning more than ``max_links`` titles is too generic to be a useful hop and gets
  no links;
- a title shared by more than ``max_links`` documents names no one thing (a speaker's name on every
  turn of a conversation, in LoCoMo) and is not linked to;
- a title mentioned by more than ``max_title_share`` of the documents (at least ``min_common``) is
  a common word or a hub, not a hop (HotpotQA has songs called "Time", "More" and "Yeah!"), and is
  not linked to either.

At search time :meth:`LinkGraph.candidates` proposes the documents one hop away from what the
retriever already knows: the titles mentioned in the conversation's texts, and the out-links of the
query's own top hits. The retriever hands their embeddings to the predictor as extra context turns,
so the predictor can pull the bridge paragraph a question needs but does not name.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from prime_retriever.atomic_file import write_bytes_atomic
from prime_retriever.errors import PrimeError
from prime_retriever.model.config import PredictorConfig
from prime_retriever.text.documents import Document

__all__ = ["WORD", "LinkExpansion", "LinkGraph", "LinkGraphError", "normalize_title", "title_words"]

WORD = re.compile(r"\w+")  # a word of a title or a text
_QUALIFIER = re.compile(r"\s*\(.*?\)\s*")
FORMAT_VERSION = 1


class LinkGraphError(PrimeError, ValueError):
    """A link-graph file is missing, unreadable or of an unknown format."""


def normalize_title(title: str) -> str:
    """``"Michael Jackson (writer)"`` → ``"michael jackson"``."""
    return _QUALIFIER.sub(" ", title).strip().lower()


def title_words(title: str) -> tuple[str, ...]:
    """The words a mention of ``title`` must match: ``"Michael Jackson (writer)"`` → ``("michael", "jackson")``.

    Words are ``WORD`` matches (``\\w+``) of the lower-cased text, as :meth:`LinkGraph.mentions` reads them.
    """
    return tuple(WORD.findall(normalize_title(title)))


@dataclass
class LinkGraph:
    """Directed title-mention links: ``links[doc_id]`` are the ids whose titles ``doc_id``'s text mentions."""

    titles: dict[tuple[str, ...], tuple[str, ...]]  # normalised title words → doc ids with that title
    links: dict[str, tuple[str, ...]]
    max_links: int = 8
    min_title_chars: int = 4
    _longest: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        self._longest = max((len(k) for k in self.titles), default=0)

    # ------------------------------------------------------------------ building

    @classmethod
    def build(
        cls,
        documents: Iterable[Document],
        *,
        max_links: int = 8,
        min_title_chars: int = 4,
        max_title_share: float = 0.005,
        min_common: int = 20,
        show_progress: bool = False,
    ) -> LinkGraph:
        """Link every document to the documents whose titles its text mentions.

        A title mentioned by more than ``max(min_common, max_title_share × documents)`` documents is a
        common word or a hub ("Time", "More", "Yeah!", "United"), not a hop, and is dropped.
        """
        docs = list(documents)
        titles: dict[tuple[str, ...], list[str]] = {}
        for d in docs:
            norm = normalize_title(d.title)
            if len(norm) < min_title_chars or norm.isdigit():
                continue
            titles.setdefault(title_words(d.title), []).append(d.id)
        named = {k: tuple(v) for k, v in titles.items() if len(v) <= max_links}  # else: a name, not an entity
        finder = cls(named, {}, max_links, min_title_chars)
        it: Iterable[Document] = docs
        if show_progress:
            from tqdm.auto import tqdm

            it = tqdm(docs, desc="linking titles", unit="doc", mininterval=2.0)
        key_of = {doc_id: k for k, ids in named.items() for doc_id in ids}
        mentioned = [finder.mentions(d.text) for d in it]  # per document, in order of first mention
        df: dict[tuple[str, ...], int] = {}
        for found in mentioned:
            for k in {key_of[x] for x in found}:
                df[k] = df.get(k, 0) + 1
        cap = max(min_common, max_title_share * len(docs))
        common = {k for k, n in df.items() if n > cap}  # "Time", "Will", "Yeah!": words, not hops
        graph = cls({k: v for k, v in named.items() if k not in common}, {}, max_links, min_title_chars)
        for d, found in zip(docs, mentioned, strict=True):
            same = {d.id, *graph.titles.get(title_words(d.title), ())}  # itself and namesakes are no hop
            found = [x for x in found if x not in same and key_of[x] not in common]
            if 0 < len(found) <= max_links:
                graph.links[d.id] = tuple(found)
        return graph

    def mentions(self, text: str) -> list[str]:
        """Ids of the documents whose (normalised) titles occur in ``text``, in order of first mention."""
        words = WORD.findall(text.lower())
        out: dict[str, None] = {}
        for i in range(len(words)):
            for n in range(1, min(self._longest, len(words) - i) + 1):
                for doc_id in self.titles.get(tuple(words[i : i + n]), ()):
                    out.setdefault(doc_id)
        return list(out)

    # ------------------------------------------------------------------ querying

    def candidates(
        self,
        texts: Sequence[str],
        seed_ids: Sequence[str],
        *,
        exclude: Iterable[str] = (),
    ) -> list[str]:
        """Documents one hop from what is known: titles mentioned in ``texts`` and out-links of ``seed_ids``.

        Order: mentions first (in order of appearance), then out-links; duplicates and ``exclude``
        are dropped.
        """
        skip = set(exclude)
        out: dict[str, None] = {}
        for t in texts:
            for x in self.mentions(t):
                if x not in skip:
                    out.setdefault(x)
        for s in seed_ids:
            for x in self.links.get(s, ()):
                if x not in skip:
                    out.setdefault(x)
        return list(out)

    @property
    def num_links(self) -> int:
        return sum(len(v) for v in self.links.values())

    def __len__(self) -> int:
        """Number of documents with at least one out-link."""
        return len(self.links)

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the graph as JSON (atomically) and return the path."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "format_version": FORMAT_VERSION,
            "max_links": self.max_links,
            "min_title_chars": self.min_title_chars,
            "titles": [[list(k), list(v)] for k, v in sorted(self.titles.items())],
            "links": {k: list(v) for k, v in sorted(self.links.items())},
        }
        try:
            write_bytes_atomic(p, json.dumps(data).encode("utf-8"))
        except OSError as exc:
            raise LinkGraphError(f"cannot write the link graph to {p}: {exc}") from exc
        return p

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LinkGraph:
        """Read a graph written by :meth:`save`; :class:`LinkGraphError` on anything else."""
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise LinkGraphError(f"no link graph at {p}") from exc
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise LinkGraphError(f"unreadable link graph {p}: {exc}") from exc
        if not isinstance(data, Mapping) or data.get("format_version") != FORMAT_VERSION:
            found = data.get("format_version") if isinstance(data, Mapping) else type(data).__name__
            raise LinkGraphError(f"link graph {p}: format version {found!r}, expected {FORMAT_VERSION}")
        try:
            titles = {tuple(str(w) for w in k): tuple(str(x) for x in v) for k, v in data["titles"]}
            links = {str(k): tuple(str(x) for x in v) for k, v in data["links"].items()}
            return cls(titles, links, int(data["max_links"]), int(data["min_title_chars"]))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise LinkGraphError(f"link graph {p} is malformed: {exc!r}") from exc


@dataclass(frozen=True)
class LinkExpansion:
    """How a retriever widens a context with linked documents before it predicts.

    1. ``seeds``: the top hits of the raw query embedding (one cheap search);
    2. candidates: :meth:`LinkGraph.candidates` of the conversation's texts and those seeds;
    3. :meth:`select`: the ``max_candidates`` candidates most similar to the query, which join the
       context as its oldest turns (most similar last, i.e. nearest the conversation).

    Training applies exactly the same steps (``training.link_expansion``), so a predictor trained
    with an expansion must be served with the same one (its config records ``link_seeds`` and
    ``link_candidates``).
    """

    graph: LinkGraph
    seeds: int = 1
    max_candidates: int = 12

    @classmethod
    def for_config(cls, config: PredictorConfig, graph: LinkGraph) -> LinkExpansion | None:
        """The expansion a predictor was trained with (its ``link_candidates``/``link_seeds``), or None."""
        if config.link_candidates == 0:
            return None
        return cls(graph, seeds=config.link_seeds, max_candidates=config.link_candidates)

    def __post_init__(self) -> None:
        if self.seeds < 0:
            raise ValueError(f"LinkExpansion.seeds must be >= 0, got {self.seeds}")
        if self.max_candidates < 1:
            raise ValueError(f"LinkExpansion.max_candidates must be >= 1, got {self.max_candidates}")

    def select(
        self,
        query: npt.NDArray[np.float32],
        candidate_ids: Sequence[str],
        vectors: Mapping[str, npt.NDArray[np.float32]],
    ) -> list[str]:
        """The at most ``max_candidates`` candidates with a vector, ordered by cosine to ``query`` (D,), best LAST.

        Ties keep the candidates' order, so the result is deterministic.
        """
        have = [c for c in candidate_ids if c in vectors]
        if not have:
            return []
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        q = q / max(float(np.linalg.norm(q)), 1e-12)
        mat = np.stack([np.asarray(vectors[c], dtype=np.float32).reshape(-1) for c in have])  # C × D
        mat = mat / np.maximum(np.linalg.norm(mat, axis=1, keepdims=True), 1e-12)
        sims = mat @ q  # C
        order = np.argsort(-sims, kind="stable")[: self.max_candidates]
        return [have[i] for i in order[::-1]]
