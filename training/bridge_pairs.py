"""Masked-bridge pairs: self-supervised ``first_hop`` examples mined from the corpus's title-mention links.

A HotpotQA bridge question names one paragraph's subject and asks about a second paragraph it does
not name; at search time that second paragraph reaches the predictor as an out-link of the query's
top hit, and the predictor has to tell it apart from the hit's other out-links. The corpus alone
gives the same task without labels. For a link A → B (A's text mentions B's title) and the first
sentence s of A that mentions B:

* query (and the one context turn, as a ``first_hop`` example has) = s with B's title cut out
  (:func:`mask_title`; if fewer than 4 words are left, the link gives no example);
* positives = A and B.

So the query still points at A, B is reachable only through A's out-links (unless s names it
twice), and which of A's out-links it is must be read from what s says around the gap. Documents
with a scope (private memories) are never used, nor any id in ``exclude`` (the benchmark passes its
eval questions' gold documents), as A or as B.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping

from prime_retriever.retrieval.link_graph import WORD, LinkGraph, title_words
from prime_retriever.text.documents import Document
from training.data.examples import FIRST_HOP, Example, split_sentences

__all__ = ["BRIDGE_SOURCE", "bridge_examples", "mask_title"]

BRIDGE_SOURCE = "bridge"
_MIN_WORDS = 4  # a masked sentence shorter than this says too little to pick B


def mask_title(sentence: str, title: str) -> str | None:
    """``sentence`` with the first clean mention of ``title`` (normalised as the link graph does) cut out.

    A clean mention starts with a capital letter and is not part of a longer name: the words just
    before and after it (when only spaces separate them) are not capitalised. So "Atom Egoyan" and
    "Casino Royale" are no mentions of "Atom" and "Casino (1995 film)", nor is "stripped-down" of
    "Stripped (tour)". None if there is no clean mention.
    """
    key = list(title_words(title))
    if not key:
        return None
    words = list(WORD.finditer(sentence))
    low = [w.group().lower() for w in words]

    def capital_neighbour(j: int, gap: str) -> bool:
        return 0 <= j < len(words) and gap.strip() == "" and words[j].group()[:1].isupper()

    for i in range(len(words) - len(key) + 1):
        if low[i : i + len(key)] != key or not words[i].group()[:1].isupper():
            continue
        last = i + len(key) - 1
        start, end = words[i].start(), words[last].end()
        before = sentence[words[i - 1].end() : start] if i > 0 else ""
        after = sentence[end : words[last + 1].start()] if last + 1 < len(words) else ""
        if capital_neighbour(i - 1, before) or capital_neighbour(last + 1, after):
            continue
        return " ".join(f"{sentence[:start]} {sentence[end:]}".split())
    return None


def bridge_examples(
    corpus: Mapping[str, Document],
    graph: LinkGraph,
    *,
    limit: int,
    seed: int = 0,
    exclude: Collection[str] = (),
) -> list[Example]:
    """At most ``limit`` masked-bridge examples (one per link A → B), sampled with ``seed``; see the module doc."""
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    skip = set(exclude)
    found: list[Example] = []
    for a_id in sorted(graph.links):
        a = corpus.get(a_id)
        if a is None or a.scope or a_id in skip:
            continue
        sentences = split_sentences(a.text)
        for b_id in graph.links[a_id]:
            b = corpus.get(b_id)
            if b is None or b.scope or b_id in skip:
                continue
            for s in sentences:
                masked = mask_title(s, b.title)  # a link target always has a title
                if masked is None:
                    continue
                if len(WORD.findall(masked)) >= _MIN_WORDS:
                    found.append(Example(
                        id=f"{BRIDGE_SOURCE}:{a_id}->{b_id}", context=(masked,), query=masked,
                        positive_ids=(a_id, b_id), framing=FIRST_HOP, source=BRIDGE_SOURCE,
                        group_id=f"{BRIDGE_SOURCE}:{a_id}",
                    ))
                break  # the first sentence that mentions B
    if len(found) > limit:
        found = random.Random(seed).sample(found, limit)
    return found
