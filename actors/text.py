"""Splitting raw text into sentences and word tokens, the input the stack expects.

Deliberately simple and deterministic (regular expressions, no model): the same text gives the
same tokens on every machine, which the exactly-once output and the fingerprint rely on.
"""
from __future__ import annotations

import re

# Words with inner hyphens/apostrophes/periods stay whole ("e-mail", "don't", "U.S.A"); any other
# non-space character is a token of its own.
_TOKEN = re.compile(r"\w+(?:[-'’.]\w+)*|[^\w\s]", re.UNICODE)
_SENTENCE_END = re.compile(r"(?<=[.!?])([\"'”’)\]]*)\s+(?=[\"'“‘(\[]?[A-Z0-9À-Ý])")
_ABBREVIATIONS = {"mr.", "mrs.", "ms.", "dr.", "prof.", "st.", "vs.", "etc.", "e.g.", "i.e.", "no.", "fig.", "jr.", "sr."}


def tokenize(text: str) -> list[str]:
    """Word tokens of ``text``: words, numbers and single punctuation marks."""
    return [match.group(0) for match in _TOKEN.finditer(text)]


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``: split after . ! ? before a capital or digit, keeping abbreviations whole."""
    pieces: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        candidate = text[start:match.start() + len(match.group(1))].strip()
        last_word = candidate.rsplit(None, 1)[-1].lower() if candidate else ""
        if last_word in _ABBREVIATIONS:
            continue
        if candidate:
            pieces.append(candidate)
        start = match.end()
    tail = text[start:].strip()
    if tail:
        pieces.append(tail)
    return pieces
