"""Deterministic train/eval splits, the leak guard, and cross-file deduplication.

A split assigns whole groups: examples sharing a ``group_id`` (one question, one dialogue) always
land on the same side. Groups are additionally linked when they share a question key
(:func:`~training.data.examples.question_key`: the normalised query, or a conversational example's
whole conversation), so :func:`split_examples` never produces a split that :func:`assert_disjoint`
refuses. A linked component's side is a pure function of ``sha256(salt + its smallest question
key)``. So adding examples that share nothing with existing ones, or a copy of an existing question
under a new id, moves no existing example; an added example that links two existing components
can move one of them (they must now share a side).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from prime_retriever.errors import DataError
from training.data.examples import Example, question_key


def bucket(key: str, salt: str = "") -> float:
    """A uniform number in [0, 1) derived from ``sha256(salt + NUL + key)``."""
    digest = hashlib.sha256(f"{salt}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            # Deterministic representative: the smaller key.
            lo, hi = sorted((ra, rb))
            self.parent[hi] = lo


def split_keys(examples: Sequence[Example], *, link_by_query: bool = True) -> list[str]:
    """Each example's split key: the smallest question key of its component (groups linked by question key).

    With ``link_by_query=False`` groups are not linked and the key is the group id.
    """
    if not link_by_query:
        return ["g:" + ex.group_id for ex in examples]
    uf = _UnionFind()
    keys = [question_key(ex) for ex in examples]
    for ex, key in zip(examples, keys, strict=True):
        uf.union("g:" + ex.group_id, "q:" + key)
    # The component's key is its smallest question key, which a copy of a question under a new id
    # (a new, possibly smaller group id) does not change.
    best: dict[str, str] = {}
    for ex, key in zip(examples, keys, strict=True):
        root = uf.find("g:" + ex.group_id)
        if root not in best or key < best[root]:
            best[root] = key
    return ["q:" + best[uf.find("g:" + ex.group_id)] for ex in examples]


def split_examples(examples: Sequence[Example], eval_fraction: float, salt: str = "",
                   *, link_by_query: bool = True) -> tuple[list[Example], list[Example]]:
    """Split into (train, eval) by hashing each example's group key; order within each side is kept."""
    if not 0.0 <= eval_fraction <= 1.0:
        raise DataError(f"eval_fraction must be in [0, 1], got {eval_fraction}")
    train: list[Example] = []
    held: list[Example] = []
    for ex, key in zip(examples, split_keys(examples, link_by_query=link_by_query), strict=True):
        (held if bucket(key, salt) < eval_fraction else train).append(ex)
    return train, held


def assert_disjoint(train: Iterable[Example], eval_: Iterable[Example], *, check_query_text: bool = True) -> None:
    """Raise :class:`DataError` if train and eval share an example id, a group id or (optionally) a question key.

    The question key (:func:`~training.data.examples.question_key`) is the normalised query, or for
    a conversational (``given``) example its whole conversation, so a short turn ("thanks") that
    recurs across unrelated dialogues is no leak. The message names up to five offending (train,
    eval) example pairs per kind. ``check_query_text=False`` skips the key check.
    """
    train = list(train)
    by_id = {ex.id: ex for ex in train}
    by_group: dict[str, Example] = {}
    by_text: dict[str, Example] = {}
    for ex in train:
        by_group.setdefault(ex.group_id, ex)
        by_text.setdefault(question_key(ex), ex)
    problems: dict[str, list[str]] = {"id": [], "group_id": [], "query text": []}
    for ex in eval_:
        if ex.id in by_id:
            problems["id"].append(f"{ex.id!r}")
        if ex.group_id in by_group:
            problems["group_id"].append(f"{ex.group_id!r} (train {by_group[ex.group_id].id!r}, eval {ex.id!r})")
        key = question_key(ex)
        if check_query_text and key in by_text:
            problems["query text"].append(f"{ex.query[:60]!r} (train {by_text[key].id!r}, eval {ex.id!r})")
    parts = [f"{len(v)} shared {k}(s): {', '.join(v[:5])}{' ...' if len(v) > 5 else ''}"
             for k, v in problems.items() if v]
    if parts:
        raise DataError("train/eval split leaks: " + "; ".join(parts))


def dedupe_examples(examples: Iterable[Example]) -> list[Example]:
    """Drop examples whose group was already claimed by another source, or whose question another group owns.

    Meant for pooling files that share questions: the first (source, group_id) to claim a group id
    or a question key (:func:`~training.data.examples.question_key`) owns it; later examples from
    the same (source, group_id) are kept (e.g. both multi_hop orders), those from another source or
    group are dropped. A conversational turn is a duplicate only with its whole conversation.
    """
    group_owner: dict[str, tuple[str, str]] = {}
    text_owner: dict[str, tuple[str, str]] = {}
    out: list[Example] = []
    for ex in examples:
        me = (ex.source, ex.group_id)
        key = question_key(ex)
        if group_owner.setdefault(ex.group_id, me) != me or text_owner.setdefault(key, me) != me:
            continue
        out.append(ex)
    return out
