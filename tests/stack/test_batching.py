"""Length-sorted batching: every item exactly once, budgets and padding limits kept."""
from __future__ import annotations

import random

import pytest

from actors.stack.batching import budget_batches, total_budget_batches


@pytest.fixture(scope="module")
def lengths() -> list[int]:
    rng = random.Random(0)
    return [rng.choice([rng.randint(1, 40), rng.randint(40, 600)]) for _ in range(500)]


def _check_partition(batches: list[list[int]], n: int) -> None:
    flat = [index for batch in batches for index in batch]
    assert sorted(flat) == list(range(n)), "each item exactly once"


def test_budget_batches_keep_the_padded_budget_and_padding(lengths: list[int]) -> None:
    batches = list(budget_batches(lengths, 4096, max_padding=0.15))
    _check_partition(batches, len(lengths))
    for batch in batches:
        longest = max(lengths[i] for i in batch)
        assert len(batch) == 1 or longest * len(batch) <= 4096
        assert all(lengths[i] >= 0.85 * longest for i in batch)
    order = [lengths[batch[0]] for batch in batches]
    assert order == sorted(order, reverse=True), "longest batches first"


def test_total_budget_batches_keep_the_total_and_optional_padding(lengths: list[int]) -> None:
    plain = list(total_budget_batches(lengths, 8192))
    _check_partition(plain, len(lengths))
    assert all(len(batch) == 1 or sum(lengths[i] for i in batch) <= 8192 for batch in plain)
    halved = list(total_budget_batches(lengths, 8192, max_padding=0.5))
    _check_partition(halved, len(lengths))
    for batch in halved:
        longest = max(lengths[i] for i in batch)
        assert all(lengths[i] >= 0.5 * longest for i in batch)
    assert len(halved) > len(plain), "the padding limit cuts more batches"
