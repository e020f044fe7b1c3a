"""Length-sorted batching by a token budget.

Padding waste is the main cost of naive embedding loops: sorting by length and cutting batches
by a budget of (longest item x batch size) roughly doubles throughput on CPU and GPU alike.
A budget alone still lets one long item pad a batch of much shorter ones (a 500-piece window
and a hundred 60-piece sentences fit 32k tokens), so ``max_padding`` also ends a batch where the
next item is that much shorter than the batch's longest.
"""
from __future__ import annotations

from typing import Callable, Iterator, Sequence

# Padded pieces per transformer forward pass on a CPU when the user sets none
# (``resources.max_batch_tokens``): small batches keep their activations in cache and run faster
# there (bench/README.md, "Levers"); on a GPU each kind keeps its own, wider default.
CPU_MAX_BATCH_TOKENS = 2048
# The padding share at which the transformer kinds end a batch (``max_padding``): with the budget
# alone one long text would pad a batch of short ones (bench/README.md, "Padding").
TRANSFORMER_MAX_PADDING = 0.15


def default_max_batch_tokens(device_type: str, gpu_default: int) -> int:
    """The padded-token budget of a transformer kind on ``device_type`` (``cpu``, ``cuda``...)."""
    return CPU_MAX_BATCH_TOKENS if device_type == "cpu" else gpu_default


def budget_batches(lengths: Sequence[int], max_tokens: int, max_items: int | None = None,
                   max_padding: float | None = None) -> Iterator[list[int]]:
    """Yield lists of indexes into ``lengths``, longest first, each batch's padded size within ``max_tokens``.

    ``max_padding`` (a fraction, e.g. 0.15): an item more than that much shorter than its batch's
    longest starts a new batch, so no item is padded by more than that share. An item longer than
    the budget gets a batch of its own (the embedding handles it by windows or chunks); order
    inside the output is the caller's job (indexes say where each item goes).
    """
    def full(count: int, longest: int, total: int, length: int) -> bool:
        return max(longest, length) * (count + 1) > max_tokens or (max_items is not None and count >= max_items)

    return _sorted_batches(lengths, full, max_padding)


def total_budget_batches(lengths: Sequence[int], max_total: int,
                         max_padding: float | None = None) -> Iterator[list[int]]:
    """Yield lists of indexes into ``lengths``, longest first, each batch's total length within ``max_total``.

    For models that skip padding (packed sequences), where only the real items cost; or, with
    ``max_padding``, for a recurrence whose steps cost about the same for 1 or 100 columns (a
    memory-bound bf16 LSTM), where wide batches matter more than padding does.
    """
    def full(count: int, longest: int, total: int, length: int) -> bool:
        return total + length > max_total

    return _sorted_batches(lengths, full, max_padding)


def _sorted_batches(lengths: Sequence[int], full: Callable[[int, int, int, int], bool],
                    max_padding: float | None) -> Iterator[list[int]]:
    """Longest first; a batch ends where ``full(count, longest, total, next_length)`` says so, or
    where the next item is more than ``max_padding`` shorter than the batch's longest."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batch: list[int] = []
    total = longest = 0
    for index in order:
        length = max(1, lengths[index])
        if batch and (full(len(batch), longest, total, length)
                      or (max_padding is not None and length < (1.0 - max_padding) * longest)):
            yield batch
            batch, total, longest = [], 0, 0
        batch.append(index)
        total += length
        longest = max(longest, length)
    if batch:
        yield batch
