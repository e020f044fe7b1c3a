"""``word``: classic static word vectors (word2vec, GloVe, fastText ``.vec``, gensim KeyedVectors)."""
from __future__ import annotations

import glob
import gzip
import os
from typing import ClassVar, Literal

from pydantic import Field

from actors.stack import registry
from actors.stack.specs.base import StackSpec

FORMATS = ("auto", "word2vec", "fasttext", "glove", "word2vec-binary", "gensim")
_PICKLE_PROTOCOL = b"\x80"


def published_url(embeddings: str) -> str | None:
    """The URL a name stands for: a published id (any case, as in Flair), a URL itself, else None."""
    if embeddings in registry.WORD_MODELS:
        return registry.WORD_MODELS[embeddings]
    if embeddings.lower() in registry.WORD_MODELS:
        return registry.WORD_MODELS[embeddings.lower()]
    return embeddings if "://" in embeddings else None


def companion_files(path: str, source_url: str | None) -> list[str]:
    """A gensim file's side arrays (``<file>.vectors.npy``, ``<file>.wv.vectors.npz``...), which hold its matrix.

    Those beside the file count; for a published id or URL whose file is a pickle, its
    ``.vectors.npy`` is resolved too (cache, mirror, URL), so that it is fetched and
    fingerprinted before any work, like the file itself.
    """
    found = sorted(glob.glob(glob.escape(path) + ".*.np[yz]"))
    if not found and source_url is not None and _is_pickle(path):
        found = [registry.resolve_file("word", source_url + ".vectors.npy").path]
    return found


def _is_pickle(path: str) -> bool:
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            return handle.read(1) == _PICKLE_PROTOCOL
    except OSError:
        return False


class WordSpec(StackSpec):
    """Static word vectors looked up in flair's order (exact, lowercase, digits as # then 0, else zeros)."""

    kind: ClassVar[str] = "word"
    builds: ClassVar[str] = "actors.stack.word:WordEmbeddings"
    location_fields: ClassVar[tuple[str, ...]] = ("embeddings",)

    embeddings: str = Field(description="a word2vec/GloVe/fastText .vec/gensim file (path or URL), or a Flair id such as glove, en, de")
    format: Literal[FORMATS] = Field("auto", description="the file's format; auto decides from its name and first bytes")  # type: ignore[valid-type]

    def files(self) -> list[str]:
        main = registry.resolve_file("word", self.embeddings, registry.WORD_MODELS).path
        return [main, *companion_files(main, published_url(self.embeddings))]
