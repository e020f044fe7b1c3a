"""Errors a user can fix, and messages fit for one line of a terminal, a log or a record.

A ``UserError`` is a mistake in the config, the paths or the environment, found before any work:
the command prints its message as one line and exits 2, with no traceback. Everything else that
stops a run exits 1 with a message cleaned by ``one_line``.
"""
from __future__ import annotations

import re

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]")


class UserError(Exception):
    """A mistake the user can fix (bad config, missing input or model, unusable output): exit 2."""


def one_line(text: object, limit: int = 2000) -> str:
    """``text`` without ANSI colour codes, its lines joined, cut to ``limit`` characters.

    Ray and botocore errors carry colour codes and multi-line tracebacks; run records, ``status``
    and job logs want one readable line.
    """
    cleaned = _ANSI.sub("", str(text))
    lines = [line.strip() for line in cleaned.splitlines() if line.strip()]
    joined = " | ".join(lines)
    return joined if len(joined) <= limit else joined[: limit - 3] + "..."
