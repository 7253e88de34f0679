"""Training rows whose earlier turns come from ANOTHER conversation: history about something else, to ignore.

On conversational data never trained on, a predictor (like the concatenation baseline) can follow
earlier turns that are about another topic. :func:`foreign_history_examples` adds, for a share of
the ``given`` training examples, a copy whose context is the context of a different example (from
another group, of any dataset) with the same query and gold documents: the only way to fit such a
row is to rely on the query. The copies keep their source's ``group_id``, so a split by group puts
them on their source's side; ``source`` is marked so that the checkpoint's provenance counts them.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace

from prime_retriever.errors import PrimeError
from training.data.examples import GIVEN, Example

__all__ = ["FOREIGN_SUFFIX", "foreign_history_examples"]

FOREIGN_SUFFIX = ":foreign-history"


def foreign_history_examples(examples: Sequence[Example], share: float, *, seed: int = 0) -> list[Example]:
    """Copies of ``share`` of the ``given`` examples with another group's context (see the module doc)."""
    if not 0.0 <= share <= 1.0:
        raise PrimeError(f"share must be in [0, 1], got {share}")
    given = [ex for ex in examples if ex.framing == GIVEN and ex.context != (ex.query,)]
    if share == 0.0 or len({ex.group_id for ex in given}) < 2:
        return []
    rng = random.Random(seed)
    chosen = rng.sample(given, round(share * len(given)))
    out: list[Example] = []
    for ex in chosen:
        donor = rng.choice(given)
        while donor.group_id == ex.group_id:  # at least two groups exist: this ends
            donor = rng.choice(given)
        out.append(replace(ex, id=ex.id + FOREIGN_SUFFIX, context=donor.context,
                           source=(ex.source or "given") + FOREIGN_SUFFIX))
    return out
