"""Texts in, vectors out, at the granularity the output asks for: the in-process core of an actor.

Used by the Ray actor, by ``corpus-embed embed`` and ``search`` (queries), and by tests that
compare the pipeline's output with an in-process computation of the same stack. Raw text becomes
sentences and tokens exactly as flair makes them (``actors.text``); a document-level stack
(``sentence_transformer``, ``transformer_document``) reads the texts whole instead.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from actors.stack.build import build_stack
from actors.stack.fingerprint import stack_fingerprint
from actors.stack.pooling import DocumentPoolEmbeddings
from actors.stack.specs import Runtime, StackSpec, parse_stack
from actors.text import split_into_sentences, tokenize_with_whitespace


@dataclass
class SentenceVectors:
    """One document's sentences, their tokens and vectors (token granularity keeps all of them)."""

    sentences: list[str]
    tokens: list[list[str]]
    vectors: list[np.ndarray]   # per sentence: [dim] (sentence granularity) or [n_tokens, dim] (token)


class TextEmbedder:
    """Holds a built stack (loaded once) and turns raw texts into vectors."""

    def __init__(self, stack: Sequence[StackSpec | dict[str, Any]], pooling: str | None = None,
                 runtime: Runtime | None = None, **runtime_options: Any):
        self.specs = parse_stack(stack)
        self.document_level = self.specs[0].document_level
        self.pooling = None if self.document_level else (pooling or "mean")
        runtime = runtime or Runtime(**{key: value for key, value in runtime_options.items() if value is not None})
        self.stack = build_stack(self.specs, runtime)
        self.stack.eval()
        if self.document_level:
            self.document_pool = None
            self.dim = self.token_dim = self.stack.embedding_length
        else:
            self.document_pool = DocumentPoolEmbeddings(self.stack, self.pooling)
            self.dim = self.document_pool.embedding_length
            self.token_dim = self.stack.embedding_length

    def fingerprint(self) -> str:
        return stack_fingerprint(self.specs, self.pooling)

    @torch.inference_mode()
    def embed_documents(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        """One vector per text, ``[n, dim]`` float32, and each text's token count."""
        if self.document_level:
            matrix, counts = self.stack.embed_with_counts(texts)
            return matrix.numpy().astype(np.float32, copy=False), counts
        token_lists = [tokenize_with_whitespace(text) for text in texts]
        vectors = self.document_pool.embed([_words(tokens) for tokens in token_lists])
        matrix = torch.stack(vectors).numpy() if vectors else np.zeros((0, self.dim), np.float32)
        return matrix.astype(np.float32, copy=False), [len(tokens) for tokens in token_lists]

    @torch.inference_mode()
    def embed_queries(self, texts: list[str]) -> np.ndarray:
        """Search queries' vectors, ``[n, dim]``: with the model's query prompt where the stack has
        one (``SentenceTransformerEmbeddings.embed_queries``), else as documents."""
        if hasattr(self.stack, "embed_queries"):
            return self.stack.embed_queries(texts).numpy().astype(np.float32, copy=False)
        return self.embed_documents(texts)[0]

    @torch.inference_mode()
    def embed_sentences(self, texts: list[str], keep_tokens: bool = False) -> list[SentenceVectors]:
        """Per text: its sentences and one vector each (or every token's vector with ``keep_tokens``)."""
        documents = [split_into_sentences(text) for text in texts]
        flat = [sentence for document in documents for sentence in document]
        if self.document_level:
            matrix, _ = self.stack.embed_with_counts([sentence.text for sentence in flat])
            vectors = list(matrix.numpy())
        else:
            words = [_words(sentence.tokens) for sentence in flat]
            embedded = self.stack.embed(words) if keep_tokens else self.document_pool.embed(words)
            vectors = [vector.numpy() for vector in embedded]
        results, cursor = [], 0
        for document in documents:
            count = len(document)
            results.append(SentenceVectors([sentence.text for sentence in document],
                                           [sentence.words for sentence in document], vectors[cursor:cursor + count]))
            cursor += count
        return results


class Word(str):
    """A token's text that also carries flair's ``whitespace_after`` (read by ``FlairEmbeddings``
    with ``tokenized_lm=False``); everywhere else it is the plain string."""

    whitespace_after: int

    def __new__(cls, text: str, whitespace_after: int) -> "Word":
        word = super().__new__(cls, text)
        word.whitespace_after = whitespace_after
        return word


def _words(tokens: Sequence[Any]) -> list[str]:
    return [Word(token.text, token.whitespace_after) for token in tokens]
