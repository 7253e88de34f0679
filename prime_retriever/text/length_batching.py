"""Length-aware batching: sort texts by token length and pack batches by tokens, not by count.

A transformer forward pads every row of a batch to its longest row, so a batch that mixes a 10-token
question with a 250-token paragraph spends 96 % of the question's row on padding. Sorting by length
makes the rows of a batch nearly equal, and a token budget (rows × padded length) keeps every batch
about the same amount of work: many short texts, or few long ones.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["token_batches"]


def token_batches(lengths: Sequence[int], max_tokens: int, max_texts: int) -> list[list[int]]:
    """Indices of ``lengths`` grouped into batches, longest texts first.

    Each batch holds texts of similar length; its padded size (rows × its longest length) stays within
    ``max_tokens`` and its row count within ``max_texts``; a single text longer than ``max_tokens``
    still gets a batch of its own. Every index appears exactly once.

    Raises:
        ValueError: ``max_tokens`` or ``max_texts`` below 1.
    """
    if max_tokens < 1 or max_texts < 1:
        raise ValueError(f"max_tokens and max_texts must be >= 1, got {max_tokens}, {max_texts}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        # longest first: the batch's first row sets its padded length
        width = longest if current else max(int(lengths[i]), 1)
        if current and (len(current) + 1 > max_texts or (len(current) + 1) * width > max_tokens):
            batches.append(current)
            current = []
            width = max(int(lengths[i]), 1)
        if not current:
            longest = width
        current.append(i)
    if current:
        batches.append(current)
    return batches
