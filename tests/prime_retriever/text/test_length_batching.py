"""Length-aware batching: every index once, similar lengths together, the token budget kept."""

from __future__ import annotations

import random

import pytest

from prime_retriever.text.length_batching import token_batches


def test_batches_cover_every_index_once_within_the_budget() -> None:
    rng = random.Random(0)
    lengths = [rng.randint(3, 256) for _ in range(500)]
    batches = token_batches(lengths, max_tokens=2048, max_texts=64)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(500))
    for b in batches:
        assert len(b) <= 64
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 2048
    # sorted longest first: padding inside a batch is small
    widths = [max(lengths[i] for i in b) for b in batches]
    assert widths == sorted(widths, reverse=True)
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    assert padded < 1.1 * sum(lengths)


def test_short_texts_share_a_batch_long_ones_do_not() -> None:
    lengths = [10] * 100 + [300] * 4
    assert [len(b) for b in token_batches(lengths, max_tokens=500, max_texts=128)] == [1, 1, 1, 1, 50, 50]
    assert [len(b) for b in token_batches(lengths, max_tokens=200, max_texts=128)] == [1, 1, 1, 1, 20, 20, 20, 20, 20]
    assert [len(b) for b in token_batches(lengths, max_tokens=10_000, max_texts=64)] == [33, 64, 7]  # 33 × 300 <= 10k


def test_bad_budget_is_refused() -> None:
    with pytest.raises(ValueError):
        token_batches([1, 2], max_tokens=0, max_texts=4)
    assert token_batches([], max_tokens=10, max_texts=2) == []
