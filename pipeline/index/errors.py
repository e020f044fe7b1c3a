"""The index's errors: each message says what is wrong and what to do about it.

All three are ``UserError``s (a mistake the user can fix): ``corpus-embed`` prints the message as
one line and exits 2. Their other bases are kept for callers that catch those.
"""
from __future__ import annotations

from pipeline.errors import UserError


class IndexBuildError(UserError, ValueError):
    """An index cannot be built or updated from this output (bad output, kind mismatch, too few vectors)."""


class IndexNotFoundError(UserError, FileNotFoundError):
    """No index at the given location (``index.json`` is missing)."""


class StackMismatchError(UserError, RuntimeError):
    """The stack built to embed a query is not the stack the index's vectors came from."""
