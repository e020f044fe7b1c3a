"""The index's errors: each message says what is wrong and what to do about it."""
from __future__ import annotations


class IndexBuildError(ValueError):
    """An index cannot be built or updated from this output (bad output, kind mismatch, too few vectors)."""


class IndexNotFoundError(FileNotFoundError):
    """No index at the given location (``index.json`` is missing)."""


class StackMismatchError(RuntimeError):
    """The stack built to embed a query is not the stack the index's vectors came from."""
