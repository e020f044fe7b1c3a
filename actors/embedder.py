"""Texts in, vectors out, at the granularity the output asks for: the in-process core of an actor.

Used by the Ray actor, by ``corpus-embed embed`` and ``search`` (queries), and by tests that
compare the pipeline's output with an in-process computation of the same stack.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from actors.stack.build import build_stack
from actors.stack.pooling import DocumentPoolEmbeddings
from actors.text import split_sentences, tokenize


@dataclass
class SentenceVectors:
    """One document's sentences, their tokens and vectors (token granularity keeps all of them)."""

    sentences: list[str]
    tokens: list[list[str]]
    vectors: list[np.ndarray]   # per sentence: [dim] (sentence granularity) or [n_tokens, dim] (token)


class TextEmbedder:
    """Holds a built stack (loaded once) and turns raw texts into vectors."""

    def __init__(self, stack_spec: list[dict[str, Any]], pooling: str = "mean", device: str | None = None,
                 max_batch_tokens: int | None = None, precision: str | None = None):
        self.stack = build_stack(stack_spec, device=device, max_batch_tokens=max_batch_tokens, precision=precision)
        self.stack.eval()
        self.pooling = pooling
        self.document_pool = DocumentPoolEmbeddings(self.stack, pooling)
        self.dim = self.document_pool.embedding_length
        self.token_dim = self.stack.embedding_length

    def fingerprint(self) -> str:
        return self.stack.fingerprint(self.pooling)

    @torch.inference_mode()
    def embed_documents(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        """One pooled vector per text, ``[n, dim]`` float32, and each text's token count."""
        token_lists = [tokenize(text) for text in texts]
        vectors = self.document_pool.embed(token_lists)
        matrix = torch.stack(vectors).numpy() if vectors else np.zeros((0, self.dim), np.float32)
        return matrix.astype(np.float32, copy=False), [len(tokens) for tokens in token_lists]

    @torch.inference_mode()
    def embed_sentences(self, texts: list[str], keep_tokens: bool = False) -> list[SentenceVectors]:
        """Per text: its sentences and one vector each (or every token's vector with ``keep_tokens``)."""
        sentences = [split_sentences(text) for text in texts]
        flat_tokens = [tokenize(sentence) for doc in sentences for sentence in doc]
        if keep_tokens:
            flat = [vec.numpy() for vec in self.stack.embed(flat_tokens)]
        else:
            flat = [vec.numpy() for vec in self.document_pool.embed(flat_tokens)]
        results, cursor = [], 0
        for doc in sentences:
            count = len(doc)
            results.append(SentenceVectors(doc, flat_tokens[cursor:cursor + count], flat[cursor:cursor + count]))
            cursor += count
        return results
