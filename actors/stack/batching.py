"""Length-sorted batching by a token budget.

Padding waste is the main cost of naive embedding loops: sorting by length and cutting batches
by a budget of (longest item x batch size) roughly doubles throughput on CPU and GPU alike.
"""
from __future__ import annotations

from typing import Iterator, Sequence


def budget_batches(lengths: Sequence[int], max_tokens: int, max_items: int | None = None) -> Iterator[list[int]]:
    """Yield lists of indexes into ``lengths``, longest first, each batch's padded size within ``max_tokens``.

    An item longer than the budget gets a batch of its own (the embedding handles it by windows
    or chunks); order inside the output is the caller's job (indexes say where each item goes).
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batch: list[int] = []
    longest = 0
    for index in order:
        length = max(1, lengths[index])
        if batch:
            padded = max(longest, length) * (len(batch) + 1)
            if padded > max_tokens or (max_items is not None and len(batch) >= max_items):
                yield batch
                batch, longest = [], 0
        batch.append(index)
        longest = max(longest, length)
    if batch:
        yield batch
