"""The text front-end against flair 0.15.1's own output on the 10 raw texts of ``textsA.json``.

``frontend_setA.json`` holds, per text, ``[t.text for t in Sentence(text)]``, each token's
``whitespace_after`` and ``SegtokSentenceSplitter().split(text)`` (original text and tokens of
each sentence), all made by flair itself (see tests/fixtures/README.md).
"""
from __future__ import annotations

import json
import random
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from actors.text import (
    FRONTEND_VERSION,
    Sentence,
    Token,
    frontend_version,
    split_into_sentences,
    split_sentences,
    tokenize,
    tokenize_with_whitespace,
)

FRONTEND = Path(__file__).resolve().parents[1] / "fixtures" / "frontend"
TEXTS: list[str] = json.loads((FRONTEND / "textsA.json").read_text())
EXPECTED: list[dict] = json.loads((FRONTEND / "frontend_setA.json").read_text())
CASES = list(range(len(TEXTS)))


def test_fixture_covers_ten_texts() -> None:
    assert len(TEXTS) == len(EXPECTED) == 10


@pytest.mark.parametrize("i", CASES)
def test_tokens_match_flair(i: int) -> None:
    assert tokenize(TEXTS[i]) == EXPECTED[i]["tokens"]


@pytest.mark.parametrize("i", CASES)
def test_whitespace_after_matches_flair(i: int) -> None:
    tokens = tokenize_with_whitespace(TEXTS[i])
    assert [token.text for token in tokens] == EXPECTED[i]["tokens"]
    assert [token.whitespace_after for token in tokens] == EXPECTED[i]["whitespace_after"]
    assert all(isinstance(token.whitespace_after, int) for token in tokens)


@pytest.mark.parametrize("i", CASES)
def test_sentences_match_flair(i: int) -> None:
    expected = EXPECTED[i]["sentences"]
    assert split_sentences(TEXTS[i]) == [sentence["text"] for sentence in expected]
    sentences = split_into_sentences(TEXTS[i])
    assert [sentence.text for sentence in sentences] == [sentence["text"] for sentence in expected]
    assert [sentence.words for sentence in sentences] == [sentence["tokens"] for sentence in expected]


def test_whitespace_after_counts_characters() -> None:
    """flair stores the gap's length: 2 across a blank line, 0 at the end."""
    tokens = tokenize_with_whitespace("One.\n\nTwo  three")
    assert [(t.text, t.whitespace_after) for t in tokens] == [("One", 0), (".", 2), ("Two", 2), ("three", 0)]


def test_problem_characters_are_cleaned_as_flair_does() -> None:
    # zero-width characters vanish inside a word; C1 0x85 reads as windows-1252's ellipsis
    assert tokenize("co\u200boperate") == ["cooperate"]
    assert "\u2026" in "".join(tokenize("wait\x85 what"))
    assert tokenize("a\u2028b") == ["ab"]


def test_word_hyphenated_across_a_line_break_is_kept() -> None:
    """segtok joins ``Hel-\\rlo`` into ``Hel-lo``, not in the text: flair's ``text.index`` raises there."""
    tokens = tokenize_with_whitespace("Hel-\rlo world")
    assert [(t.text, t.whitespace_after) for t in tokens] == [("Hel-lo", 1), ("world", 0)]
    assert split_sentences("Hel-\rlo world. Next one.") == ["Hel-lo world.", "Next one."]


@pytest.mark.parametrize("blank", ["", " ", "\n\n\t ", "\u200b", "\u2028\u2029"])
def test_texts_without_words_give_nothing(blank: str) -> None:
    assert tokenize(blank) == []
    assert tokenize_with_whitespace(blank) == []
    assert split_sentences(blank) == []
    assert split_into_sentences(blank) == []


NASTY = [
    "\ud800",
    "a\udfffb \ud83d.",
    "\x00\x01\x02 \x1b[31m red \x7f",
    "\x80\x81\x8d\x8f\x90\x99",
    "😀👍🏽 family 👨‍👩‍👧 flag 🇩🇪!",
    "Hel- \r\n lo. well-\rknown\u2028x-\u2029y",
    "'' \" ' `` — – - ... .. . ! ? ; : ,",
    "don't can't won't y'all rock'n'roll ’tis",
    "(((( )))) [[ ]] {{ }}",
    "\ufeff\u200c\u200b\ufe0f",
    "a" * 3000 + "-\r" + "b" * 10,
    "\r\r\n\n\x0b\x0c\x1c\x1d\x1e\x1f\x85",
]


def _random_texts(count: int, seed: int = 0) -> list[str]:
    pool = (
        list("abcXYZ019 .,;:!?'\"()[]-‐–—/\\@#$%&*\n\r\t\x0b\x0c")
        + ["\ud800", "\udc00", "\x00", "\x1f", "\x7f", "\x85", "\x81", "\u200b", "\ufeff", "\u2028", "\u2029"]
        + ["😀", "🏽", "\u200d", "ß", "é", "\u0301", "\u00a0", "\u3000", "中", "’", "n't", "...", "www.x.de", "a@b.co"]
    )
    rng = random.Random(seed)
    return ["".join(rng.choice(pool) for _ in range(rng.randint(0, 40))) for _ in range(count)]


def _check(text: str) -> None:
    tokens = tokenize_with_whitespace(text)
    assert all(isinstance(t, Token) and t.text and t.whitespace_after >= 0 for t in tokens)
    assert not tokens or tokens[-1].whitespace_after == 0
    assert tokenize(text) == [t.text for t in tokens]
    sentences = split_into_sentences(text)
    assert all(isinstance(s, Sentence) and s.tokens and isinstance(s.text, str) for s in sentences)
    assert split_sentences(text) == [s.text for s in sentences]


@pytest.mark.parametrize("text", NASTY)
def test_never_raises_on_odd_strings(text: str) -> None:
    _check(text)


def test_never_raises_on_random_strings() -> None:
    for text in _random_texts(400):
        _check(text)


def test_frontend_version_names_flair_and_installed_segtok() -> None:
    assert FRONTEND_VERSION == f"flair-0.15.1/segtok-{metadata.version('segtok')}"


def test_frontend_version_follows_segtok_version(monkeypatch: pytest.MonkeyPatch) -> None:
    real = metadata.version
    monkeypatch.setattr(metadata, "version", lambda name: "9.9.9" if name == "segtok" else real(name))
    assert frontend_version() == "flair-0.15.1/segtok-9.9.9" != FRONTEND_VERSION


def test_front_end_imports_without_torch() -> None:
    code = "import sys, actors.text as t; t.tokenize('a b.'); print(t.FRONTEND_VERSION); assert 'torch' not in sys.modules"
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == FRONTEND_VERSION
