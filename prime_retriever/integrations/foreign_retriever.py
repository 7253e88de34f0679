"""A :class:`~prime_retriever.PredictiveRetriever` over a framework's collection, with its link graph.

A checkpoint trained with link expansion wants the corpus's title-mention graph. A framework's
collection is its own corpus, so the graph can be read from it (:func:`link_graph_from_store`): the
titles and texts that :class:`~prime_retriever.integrations.payload_schema.PayloadSchema` names. A
collection without titles cannot link anything: asking for its graph raises
:class:`~prime_retriever.integrations.foreign_store.ForeignCollectionError`; a collection with titles
but no texts links only the titles the conversation mentions (the query's top hit has no out-links
without its text), as the retriever already does with embeddings-only input.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prime_retriever import LinkGraph, PredictiveRetriever
from prime_retriever.integrations.foreign_store import ForeignCollectionError, ForeignQdrantStore
from prime_retriever.retrieval.link_graph import LinkExpansion

if TYPE_CHECKING:
    from prime_retriever import TextEncoder
    from prime_retriever.backends.inference import PredictorBackend

__all__ = ["PredictorOptions", "link_graph_from_store", "open_foreign_retriever"]


@dataclass(frozen=True)
class PredictorOptions:
    """What to serve a foreign collection with (plain values, so a framework can serialise them).

    Attributes:
        checkpoint: a checkpoint folder; ``None``: the random residual predictor (= the query baseline).
        links: a link-graph JSON file; ``None``: read from the collection if the predictor was trained
            with link expansion; ``"none"``: no link expansion.
        encoder: a model folder for the encoder; ``None``: the bundled MiniLM.
        backend: ``"eager"``, ``"fast"``, ``"compiled"`` or ``"onnx"``.
        prepare_k: hits a PREPARE keeps (see ``PredictiveRetriever``).
    """

    checkpoint: str | None = None
    links: str | None = None
    encoder: str | None = None
    backend: str = "eager"
    prepare_k: int = 10

    def to_dict(self) -> dict[str, Any]:
        return {"checkpoint": self.checkpoint, "links": self.links, "encoder": self.encoder,
                "backend": self.backend, "prepare_k": self.prepare_k}


async def link_graph_from_store(store: ForeignQdrantStore, **build: Any) -> LinkGraph:
    """The title-mention graph of every document in ``store`` (``build``: :meth:`LinkGraph.build`'s options).

    Raises:
        ForeignCollectionError: no document has a title where the schema looks for one.
    """
    docs = await store.documents()
    where = ".".join(store.schema.title_path)
    if not any(d.title for d in docs):
        raise ForeignCollectionError(
            f"{store.name}: none of its {len(docs)} documents has a title at payload key {where!r}, and link "
            "expansion links titles; name the key that holds them (title_key=...), or serve without link "
            "expansion (links='none')"
        )
    if not any(d.text for d in docs):
        warnings.warn(
            f"{store.name}: no document has a text at {'.'.join(store.schema.text_path)!r}: only titles the "
            "conversation mentions are expanded, not the out-links of the query's top hit", stacklevel=2,
        )
    return LinkGraph.build(docs, **build)


async def open_foreign_retriever(
    store: ForeignQdrantStore,
    options: PredictorOptions | None = None,
    *,
    encoder: TextEncoder | None = None,
    backend: PredictorBackend | None = None,
    links: LinkGraph | None = None,
    **retriever_options: Any,
) -> PredictiveRetriever:
    """A retriever over ``store``; ``encoder``/``backend``/``links`` given as objects win over ``options``.

    ``retriever_options``: keyword arguments of :class:`PredictiveRetriever`.
    """
    options = options if options is not None else PredictorOptions()
    retriever_options.setdefault("prepare_k", options.prepare_k)
    # the store holds no resource of its own (the client is the framework's), so no retriever owns it
    retriever_options["owns_store"] = False
    plain = PredictiveRetriever.from_config(
        options.checkpoint, store=store, encoder=encoder if encoder is not None else options.encoder,
        backend=backend if backend is not None else options.backend, expansion=None, **retriever_options,
    )
    config = getattr(plain.backend, "config", None)
    wants = int(getattr(config, "link_candidates", 0) or 0)
    if not wants or options.links == "none" or config is None:
        await plain.warmup()  # opens (checks) the collection, so the embedder path can search it at once
        return plain
    graph = links if links is not None else (
        LinkGraph.load(options.links) if options.links is not None else await link_graph_from_store(store)
    )
    # the expansion decides how many conversation turns the predictor keeps, so it is given at construction
    expanded = PredictiveRetriever(
        plain.backend, plain.encoder, store, expansion=LinkExpansion.for_config(config, graph),
        score_confidence=plain.score_confidence, **retriever_options,
    )
    await plain.close()
    await expanded.warmup()
    return expanded
