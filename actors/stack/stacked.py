"""Concatenation of several token embeddings, in list order (as Flair's StackedEmbeddings)."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from actors.stack.base import Sentences, TokenEmbeddings
from actors.stack.specs import StackSpec


class StackedEmbeddings(TokenEmbeddings):
    """``[e1 | e2 | ...]`` per token. The order is the list's: it fixes each dimension's meaning.

    ``stack(sentences)`` gives the padded ``[batch, max_tokens, embedding_length]`` tensor and its
    mask; it trains whichever members are fine-tuned (or have a trainable scalar mix), and the
    frozen members only feed it.
    """

    def __init__(self, embeddings: Sequence[TokenEmbeddings]):
        super().__init__()
        if not embeddings:
            raise ValueError("StackedEmbeddings needs at least one embedding")
        self.embeddings = nn.ModuleList(embeddings)
        self.embedding_length = sum(emb.embedding_length for emb in embeddings)
        # Each member's spec, in order: what the stack is, for the fingerprint and the manifest.
        self.specs: list[StackSpec] = [emb.spec for emb in embeddings]

    def _vectors(self, sentences: Sentences, out: torch.device) -> list[torch.Tensor]:
        parts = [emb._vectors(sentences, out) for emb in self.embeddings]
        return [torch.cat([part[i] for part in parts], dim=-1) for i in range(len(sentences))]

    def get_config_dict(self) -> list[dict[str, Any]]:  # type: ignore[override]
        """The stack in config form, ``[{kind: settings}, ...]``."""
        return [spec.get_config_dict() for spec in self.specs]

    def model_files(self) -> list[str]:
        return [path for emb in self.embeddings for path in emb.model_files()]

    def fingerprint(self, pooling: str | None = None) -> str:
        """Stable hash of the stack's specs and its model files' bytes (see actors.stack.fingerprint)."""
        from actors.stack.fingerprint import stack_fingerprint

        return stack_fingerprint(self.specs, pooling)
