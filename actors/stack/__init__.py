"""Flair-style stacked embeddings: transformer, Flair char-LM, ELMo and classic word vectors.

Every embedding takes pre-tokenized sentences and returns one float32 CPU tensor per sentence,
``[n_tokens, embedding_length]``. Names and semantics follow Flair, because that is what users know.

Exports are resolved lazily (PEP 562) so that torch-free helpers such as
``actors.stack.registry`` can be imported by the driver without pulling in torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TokenEmbeddings": "actors.stack.base",
    "TransformerWordEmbeddings": "actors.stack.transformer",
    "FlairEmbeddings": "actors.stack.flair",
    "ELMoEmbeddings": "actors.stack.elmo",
    "WordEmbeddings": "actors.stack.word",
    "StackedEmbeddings": "actors.stack.stacked",
    "DocumentPoolEmbeddings": "actors.stack.pooling",
    "SentenceTransformerEmbeddings": "actors.stack.sentence_transformer",
    "TransformerDocumentEmbeddings": "actors.stack.transformer_document",
    "DocumentEmbeddings": "actors.stack.base",
    "ScalarMix": "actors.stack.scalar_mix",
    "build_stack": "actors.stack.build",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'actors.stack' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
