"""``ELMoEmbeddings``: Flair's ELMo embedding, on AllenNLP's published model files, without allennlp.

Argument names and ``embedding_mode`` follow Flair's ``ELMoEmbeddings``; the numbers are those of
AllenNLP's ``_ElmoBiLm`` with the sentence boundaries removed and every sentence started from zero
state (see ``elmo_model`` for the network and why it is stateless).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from actors.stack.base import Sentences, TokenEmbeddings
from actors.stack.batching import budget_batches
from actors.stack.device import autocast, pick_device
from actors.stack.elmo_model import ElmoBiLm, ElmoOptions, batch_char_ids, load_elmo_weights
from actors.stack.registry import ELMO_MODELS, ModelNotFoundError, resolve_file

EMBEDDING_MODES = ("all", "top", "average")
PRECISIONS = ("auto", "float64", "float32", "bfloat16", "float16")
# Flair accepts "portuguese" for the published Portuguese model.
MODEL_ALIASES = {"portuguese": "pt"}
OPTIONS_NAME, WEIGHTS_NAME = "options.json", "weights.hdf5"


def _folder_files(folder: str) -> tuple[str, str]:
    """``options.json`` + ``weights.hdf5`` in ``folder``, else its only ``*.json`` and ``*.hdf5`` (AllenNLP's names)."""
    found = []
    for name, pattern in ((OPTIONS_NAME, "*.json"), (WEIGHTS_NAME, "*.hdf5")):
        exact = Path(folder) / name
        candidates = [exact] if exact.is_file() else sorted(Path(folder).glob(pattern))
        if len(candidates) != 1:
            raise ModelNotFoundError(
                f"ELMo folder {folder!r} must hold {OPTIONS_NAME} and {WEIGHTS_NAME} "
                f"(or exactly one *.json and one *.hdf5); found for {pattern}: {[c.name for c in candidates]}"
            )
        found.append(str(candidates[0]))
    return found[0], found[1]


def resolve_elmo_files(model: str, options_file: str | None = None, weight_file: str | None = None) -> tuple[str, str]:
    """Local paths of the options and weights: explicit files win, else ``model`` as a folder or published name.

    Published names (``small``, ``medium``, ``original``, ``pt``, ``pubmed``) resolve through the
    registry: cache, then the mirror, then AllenNLP's URL. Explicit files may be paths or URLs.
    """
    options = resolve_file("elmo", options_file).path if options_file else None
    weights = resolve_file("elmo", weight_file).path if weight_file else None
    if options and weights:
        return options, weights
    folder = os.path.expanduser(model)
    if os.path.isdir(folder):
        folder_options, folder_weights = _folder_files(folder)
        return options or folder_options, weights or folder_weights
    name = MODEL_ALIASES.get(model, model)
    try:
        options = options or resolve_file("elmo", name, {k: v[0] for k, v in ELMO_MODELS.items()}).path
        weights = weights or resolve_file("elmo", name, {k: v[1] for k, v in ELMO_MODELS.items()}).path
    except ModelNotFoundError as error:
        raise ModelNotFoundError(
            f"ELMo model {model!r} is neither a folder with {OPTIONS_NAME} + {WEIGHTS_NAME} nor a file "
            f"that could be found. {error}"
        ) from error
    return options, weights


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

    def __init__(
        self,
        model: str = "original",
        options_file: str | None = None,
        weight_file: str | None = None,
        embedding_mode: str = "all",
        max_batch_tokens: int = 4096,
        device: str | torch.device | None = None,
        precision: str = "auto",
        fine_tune: bool = False,
    ):
        super().__init__()
        if embedding_mode not in EMBEDDING_MODES:
            raise ValueError(f"embedding_mode must be one of {EMBEDDING_MODES}, got {embedding_mode!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens must be positive, got {max_batch_tokens}")
        self.name = model
        self.embedding_mode = embedding_mode
        self.max_batch_tokens = max_batch_tokens
        self.precision = precision
        self.options_file, self.weight_file = resolve_elmo_files(model, options_file, weight_file)
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

    def config(self) -> dict[str, Any]:
        """The settings that define the vectors: the network's options and the mode (files are hashed apart)."""
        return {
            "type": "elmo",
            "embedding_mode": self.embedding_mode,
            "precision": self.precision,
            "options": self.options,
        }

    def model_files(self) -> list[str]:
        return [self.options_file, self.weight_file]

    def extra_repr(self) -> str:
        return f"model={self.name!r}, embedding_mode={self.embedding_mode!r}"
