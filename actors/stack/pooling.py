"""Sentence and document vectors from token vectors (Flair's DocumentPoolEmbeddings)."""
from __future__ import annotations

from typing import Any

import torch

from actors.stack.base import Sentences, TokenEmbeddings

POOLINGS = ("mean", "max", "min", "cls")


class DocumentPoolEmbeddings(torch.nn.Module):
    """Pools a token embedding over each sentence: mean | max | min, or the transformer's ``cls`` vector.

    ``embed`` returns one ``[embedding_length]`` float32 vector per sentence. ``cls`` (as Flair's
    TransformerDocumentEmbeddings) needs a stack made of one transformer only.
    """

    def __init__(self, token_embeddings: TokenEmbeddings, pooling: str = "mean"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.token_embeddings = token_embeddings
        self.pooling = pooling
        self._cls_source = _cls_source(token_embeddings) if pooling == "cls" else None
        self.embedding_length = (
            self._cls_source.hidden_size if self._cls_source is not None else token_embeddings.embedding_length
        )

    def embed(self, sentences: Sentences) -> list[torch.Tensor]:
        if self._cls_source is not None:
            return self._cls_source.embed_cls(sentences)
        pooled = []
        for vectors in self.token_embeddings.embed(sentences):
            if vectors.shape[0] == 0:
                pooled.append(torch.zeros(self.embedding_length))
            elif self.pooling == "mean":
                pooled.append(vectors.mean(dim=0))
            elif self.pooling == "max":
                pooled.append(vectors.max(dim=0).values)
            else:
                pooled.append(vectors.min(dim=0).values)
        return pooled

    def forward(self, sentences: Sentences) -> torch.Tensor:
        """``[batch, embedding_length]`` on the token embeddings' device, for user models.

        Built on the token embeddings' ``forward`` (or the transformer's ``[CLS]`` states), so it
        is differentiable wherever they are; an empty sentence pools to zeros, as in ``embed``.
        """
        if self._cls_source is not None:
            source = self._cls_source
            with source._grad_context():
                vectors = source._cls_vectors(sentences, source.device)
            return torch.stack(vectors) if vectors else torch.zeros(0, self.embedding_length, device=source.device)
        padded, mask = self.token_embeddings(sentences)
        if padded.shape[1] == 0:
            return padded.new_zeros(padded.shape[0], self.embedding_length)
        keep = mask.unsqueeze(-1)
        if self.pooling == "mean":
            return (padded * keep).sum(dim=1) / mask.sum(dim=1, keepdim=True).clamp(min=1)
        if self.pooling == "max":
            pooled = padded.masked_fill(~keep, float("-inf")).amax(dim=1)
        else:
            pooled = padded.masked_fill(~keep, float("inf")).amin(dim=1)
        return torch.where(mask.any(dim=1, keepdim=True), pooled, torch.zeros_like(pooled))

    def get_config_dict(self) -> dict[str, Any]:
        """The pooling and the stack it pools, in config form."""
        return {"pooling": self.pooling, "stack": self.token_embeddings.get_config_dict()}


def _cls_source(embeddings: TokenEmbeddings) -> Any:
    from actors.stack.stacked import StackedEmbeddings

    inner = embeddings
    if isinstance(inner, StackedEmbeddings) and len(inner.embeddings) == 1:
        inner = inner.embeddings[0]
    if not hasattr(inner, "embed_cls"):
        raise ValueError("pooling 'cls' needs a stack of exactly one transformer embedding")
    return inner
