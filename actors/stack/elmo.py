"""``ELMoEmbeddings``: Flair's ELMo embedding, on AllenNLP's published model files, without allennlp.

Argument names and ``embedding_mode`` follow Flair's ``ELMoEmbeddings``; the numbers are those of
AllenNLP's ``_ElmoBiLm`` with the sentence boundaries removed and every sentence started from zero
state (see ``elmo_model`` for the network and why it is stateless).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from actors.stack.base import Sentences, TokenEmbeddings
from actors.stack.batching import budget_batches
from actors.stack.device import autocast, check_precision, pick_device
from actors.stack.elmo_model import ElmoBiLm, ElmoOptions, batch_char_ids, load_elmo_weights
from actors.stack.specs import ElmoSpec

DEFAULT_MAX_BATCH_TOKENS = 4096


class ELMoEmbeddings(TokenEmbeddings):
    """ELMo token vectors: the char-CNN layer and two biLSTM layers, each ``2 * projection_dim`` wide.

    ``embedding_mode``: ``all`` concatenates the three layers (lowest first), ``top`` keeps the last,
    ``average`` takes their mean. ``max_batch_tokens`` bounds a batch's padded size (boundary tokens
    included); it changes speed and memory, never the vectors.

    ``precision``: ``auto`` | ``float64`` | ``float32`` | ``bfloat16`` | ``float16``. The clipped
    LSTMs amplify rounding along a sentence: two float32 runs whose matmuls merely add in another
    order (another batch size, thread count or BLAS kernel) drift apart by up to ~1.5e-5 over a
    70-token sentence of the reference set, about as far as AllenNLP's float32 output itself is
    from exact. So ``auto`` runs the recurrence in float64 on CPU (the char CNN stays float32), which
    makes the vectors batch-invariant and as close to AllenNLP's as its float32 allows, at roughly
    2-3x the LSTM time; on GPU ``auto`` is bf16/fp16 autocast with float32 states, for speed.
    An explicit ``bfloat16`` / ``float16`` autocasts on CPU too (float32 states).
    ``float32`` is plain float32 everywhere (AllenNLP's own arithmetic, faster on CPU).

    ``fine_tune=True`` lets the network's weights (char CNN, highway, projection, LSTMs) train
    through ``forward``; by default they are frozen.
    """

    spec_class = ElmoSpec

    def __init__(
        self,
        model: str = "original",
        *,
        max_batch_tokens: int | None = None,
        device: str | torch.device | None = None,
        precision: str = "auto",
        fine_tune: bool = False,
        **settings: Any,
    ):
        super().__init__()
        self.spec = spec = ElmoSpec(model=model, **settings)
        check_precision(precision)
        max_batch_tokens = DEFAULT_MAX_BATCH_TOKENS if max_batch_tokens is None else max_batch_tokens
        if max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens must be positive, got {max_batch_tokens}")
        embedding_mode = spec.embedding_mode
        self.name = model
        self.embedding_mode = embedding_mode
        self.max_batch_tokens = max_batch_tokens
        self.precision = precision
        self.options_file, self.weight_file = spec.files()
        self.options = json.loads(Path(self.options_file).read_text())
        self.bilm = ElmoBiLm(ElmoOptions.from_dict(self.options))
        load_elmo_weights(self.bilm, self.weight_file)
        self.fine_tune = bool(fine_tune)
        self.bilm.requires_grad_(self.fine_tune)
        self.eval()
        n_layers = self.bilm.options.n_layers + 1
        width = self.bilm.output_dim
        self.embedding_length = width * n_layers if embedding_mode == "all" else width
        self.to(pick_device(device))

    def _pretrained_modules(self) -> list[nn.Module]:
        return [self.bilm]

    def _recurrence_dtype(self, device: torch.device) -> torch.dtype:
        if self.precision == "float64" or (self.precision == "auto" and device.type == "cpu"):
            return torch.float64
        return torch.float32

    def _combine(self, layers: torch.Tensor) -> torch.Tensor:
        """``[n_layers, batch, time, dim]`` → ``[batch, time, embedding_length]`` as ``embedding_mode`` says."""
        if self.embedding_mode == "top":
            return layers[-1]
        if self.embedding_mode == "average":
            return layers.mean(dim=0)
        n_layers, batch, steps, width = layers.shape
        return layers.permute(1, 2, 0, 3).reshape(batch, steps, n_layers * width)

    def _vectors(self, sentences: Sentences, out: torch.device) -> list[torch.Tensor]:
        """Float32 ``[n_tokens, embedding_length]`` per sentence, in input order, on ``out``."""
        results: list[torch.Tensor] = [torch.zeros(0, self.embedding_length, device=out) for _ in sentences]
        indexes = [i for i, sentence in enumerate(sentences) if len(sentence) > 0]
        lengths = [len(sentences[i]) + 2 for i in indexes]
        device = self.device
        max_chars = self.bilm.options.max_chars
        recurrence_dtype = self._recurrence_dtype(device)
        lowered = "float32" if self.precision == "float64" else self.precision
        with autocast(device, lowered):
            for batch in budget_batches(lengths, self.max_batch_tokens):
                batch_sentences = [sentences[indexes[b]] for b in batch]
                char_ids, batch_lengths = batch_char_ids(batch_sentences, max_chars)
                layers = self.bilm(char_ids.to(device), batch_lengths.to(device), recurrence_dtype)
                vectors = self._combine(layers).float().to(out)
                for row, b in enumerate(batch):
                    n_tokens = lengths[b] - 2
                    results[indexes[b]] = vectors[row, 1 : n_tokens + 1].clone()
        return results

    def extra_repr(self) -> str:
        return f"model={self.name!r}, embedding_mode={self.embedding_mode!r}"
