"""The one interface every token embedding implements.

Embeddings are ``torch.nn.Module``s so that users can put them inside their own models
(``.to(device)``, ``state_dict()``), while ``embed()`` is the inference entry the pipeline uses.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

Sentences = Sequence[Sequence[str]]


class TokenEmbeddings(nn.Module):
    """Base class: pre-tokenized sentences in, one ``[n_tokens, embedding_length]`` tensor out each.

    Subclasses implement ``_embed_batch`` for an already length-sorted batch and set
    ``embedding_length``. They must be batch-invariant: a sentence gets the same vectors
    whatever else is in its batch.
    """

    embedding_length: int

    def embed(self, sentences: Sentences) -> list[torch.Tensor]:
        """Embed ``sentences``; returns float32 CPU tensors, one per sentence, in input order."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """The settings that define this embedding's output (used for the stack fingerprint)."""
        raise NotImplementedError

    def model_files(self) -> list[str]:
        """Local files whose bytes define this embedding's output (used for the fingerprint)."""
        return []

    @property
    def device(self) -> torch.device:
        for tensor in self.parameters():
            return tensor.device
        for tensor in self.buffers():
            return tensor.device
        return torch.device("cpu")

    def forward(self, sentences: Sentences) -> tuple[torch.Tensor, torch.Tensor]:
        """Tensor-first entry for user models: ``(padded [batch, max_tokens, dim], mask [batch, max_tokens])``."""
        vectors = self.embed(sentences)
        return pad_vectors(vectors, self.embedding_length)


def pad_vectors(vectors: list[torch.Tensor], dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad per-sentence ``[n_i, dim]`` tensors into ``[batch, max_n, dim]`` plus a boolean mask."""
    max_len = max((v.shape[0] for v in vectors), default=0)
    device = vectors[0].device if vectors else torch.device("cpu")
    padded = torch.zeros(len(vectors), max_len, dim, device=device)
    mask = torch.zeros(len(vectors), max_len, dtype=torch.bool, device=device)
    for i, vec in enumerate(vectors):
        padded[i, : vec.shape[0]] = vec
        mask[i, : vec.shape[0]] = True
    return padded, mask
