"""Raw text to sentences and word tokens, exactly as flair 0.15.1 makes them.

Users compare our vectors with flair's, and flair embeds ``Sentence(text)``; a vector can only
match when the tokens do. So this module reproduces flair's front-end rather than a look-alike:

* ``tokenize`` / ``tokenize_with_whitespace``: ``flair.data.Sentence(text)`` with flair's default
  ``SegtokTokenizer``. The text is first cleaned as ``Sentence._handle_problem_characters`` does
  (zero-width characters, U+2028/U+2029 dropped; C1 controls U+0080-U+0099 read as the
  windows-1252 characters they usually stand for, or dropped), then segtok's ``split_single``
  cuts it into lines/sentences, ``word_tokenizer`` + ``split_contractions`` into words, and
  empty words are dropped (``SegtokTokenizer.run_tokenize``).
* ``whitespace_after`` is flair's integer: the number of characters between a token and the next
  one (``Sentence.__init__`` finds every word with ``text.index(word, end_of_previous_word)``),
  0 for the last token. It is 2 across a blank line, not a boolean.
* ``split_sentences`` / ``split_into_sentences``: ``SegtokSentenceSplitter().split(text)``: segtok's
  ``split_multi`` (single newlines stay inside a sentence, blank lines split), each sentence made
  a ``Sentence`` of its own, its text being ``Sentence.to_original_text()`` (tokens re-joined with
  ``whitespace_after`` spaces, so a newline inside a sentence reads as a space).

Where flair would raise, we go on instead, because one odd document must not stop a corpus:

* segtok joins a word hyphenated across a line break (``"Hel-\\nlo"`` gives ``"Hel-lo"``), a
  word that is not in the text, and flair's ``text.index`` raises ``ValueError``. We find the word
  with the removed whitespace allowed between its characters and go on from its end.
* flair keeps sentences without tokens (an empty or whitespace-only text gives one empty
  ``Sentence``); we drop them: they have nothing to embed, so an empty text gives ``[]``.

Everything here is torch-free: the driver imports it to plan and fingerprint work.
``FRONTEND_VERSION`` names these semantics and the segtok release underneath; it is part of each
output unit's identity, so a segtok upgrade (new rules, new tokens) gives new units.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import metadata

from segtok.segmenter import split_multi, split_single
from segtok.tokenizer import split_contractions, word_tokenizer

FLAIR_SEMANTICS = "flair-0.15.1"


def _segtok_version() -> str:
    try:
        return metadata.version("segtok")
    except metadata.PackageNotFoundError:  # an unpackaged copy: still say which one it is
        return "unknown"


def frontend_version() -> str:
    """``FRONTEND_VERSION`` as the installed segtok makes it (read from package metadata, no torch)."""
    return f"{FLAIR_SEMANTICS}/segtok-{_segtok_version()}"


FRONTEND_VERSION = frontend_version()

# Sentence.__remove_zero_width_characters: invisible characters flair deletes before tokenizing.
_DROPPED = dict.fromkeys(map(ord, "\u200c\u200b\ufe0f\ufeff\u2028\u2029"))
_C1 = re.compile(r"[\u0080-\u0099]")


@dataclass(frozen=True)
class Token:
    """One word as flair's ``Token`` has it.

    ``whitespace_after`` is the number of characters between this token and the next one in the
    (cleaned) text, 0 for a sentence's last token: flair keeps the count, not a flag.
    """

    text: str
    whitespace_after: int


@dataclass(frozen=True)
class Sentence:
    """One sentence of ``SegtokSentenceSplitter``: its ``to_original_text()`` and its tokens."""

    text: str
    tokens: tuple[Token, ...]

    @property
    def words(self) -> list[str]:
        """The token texts, the input the word-level embeddings take."""
        return [token.text for token in self.tokens]


def clean(text: str) -> str:
    """``Sentence._handle_problem_characters``: what flair does to a text before tokenizing it."""
    text = text.translate(_DROPPED)
    return _C1.sub(_windows_1252, text)


def _windows_1252(match: re.Match[str]) -> str:
    try:
        return bytes([ord(match.group(0))]).decode("windows-1252")
    except UnicodeDecodeError:  # 0x81, 0x8D, 0x8F, 0x90: no character there, flair drops it
        return ""


def _segtok_words(text: str) -> list[str]:
    """``SegtokTokenizer.run_tokenize``: lines/sentences, then words and split contractions."""
    words: list[str] = []
    for sentence in split_single(text):
        words.extend(split_contractions(word_tokenizer(sentence)))
    return [word for word in words if word]


def _locate(text: str, word: str, offset: int) -> tuple[int, int]:
    """Start and end of ``word`` in ``text`` at or after ``offset``, as ``Sentence.__init__`` finds it.

    ``str.index`` first, which is flair's rule. segtok only ever removes whitespace from inside a
    word (a hyphen at a line break), so a word ``index`` cannot find is found with whitespace
    allowed between its characters; failing that, it is taken to sit at ``offset``.
    """
    try:
        start = text.index(word, offset)
        return start, start + len(word)
    except ValueError:
        pass
    match = re.compile(r"\s*?".join(re.escape(char) for char in word)).search(text, offset)
    if match:
        return match.start(), match.end()
    return offset, min(offset + len(word), len(text))


def _tokens(text: str) -> tuple[list[Token], int]:
    """Tokens of an already cleaned ``text`` and where the first one starts (flair's start_position)."""
    words = _segtok_words(text)
    gaps: list[int] = []
    first_start = offset = 0
    for index, word in enumerate(words):
        start, end = _locate(text, word, offset)
        if index:
            gaps.append(start - offset)
        else:
            first_start = start
        offset = end
    gaps.append(0)  # the last token has no whitespace after
    return [Token(word, gap) for word, gap in zip(words, gaps)], first_start


def tokenize_with_whitespace(text: str) -> list[Token]:
    """``Sentence(text)``'s tokens with their ``whitespace_after``; ``[]`` for a text without words."""
    return _tokens(clean(text))[0]


def tokenize(text: str) -> list[str]:
    """The token texts of ``flair.data.Sentence(text)`` (flair's default segtok tokenizer)."""
    return [token.text for token in tokenize_with_whitespace(text)]


def _original_text(tokens: list[Token], first_start: int, sentence_start: int) -> str:
    """``Sentence.to_original_text()``, quirks included.

    flair pads with ``first token's position - sentence's position`` spaces, mixing a position in
    the sentence's own cleaned text with one in the whole text; that is 0 or negative (no padding)
    except where cleaning shifted the first sentence's first token. Kept for exactness.
    """
    if not tokens:
        return ""
    body = "".join(token.text + " " * token.whitespace_after for token in tokens).strip()
    return " " * (first_start - sentence_start) + body


def split_into_sentences(text: str) -> list[Sentence]:
    """``SegtokSentenceSplitter().split(text)``: each sentence's original text and its tokens.

    Sentences without tokens are left out (flair keeps them, empty).
    """
    sentences: list[Sentence] = []
    offset = 0
    for plain in split_multi(text):
        found = text.find(plain, offset)  # flair: text.index, always found for segtok's output
        start = found if found >= 0 else offset
        tokens, first_start = _tokens(clean(plain))
        if tokens:
            sentences.append(Sentence(_original_text(tokens, first_start, start), tuple(tokens)))
        offset = start + len(plain)
    return sentences


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text`` as flair's ``SegtokSentenceSplitter`` gives them (``to_original_text``)."""
    return [sentence.text for sentence in split_into_sentences(text)]
