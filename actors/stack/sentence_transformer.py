"""Sentence embeddings as sentence-transformers' ``encode`` gives them, under this project's batching.

``SentenceTransformerEmbeddings(model)`` gives each text the vector that
``SentenceTransformer(model).encode(text, prompt=...)`` gives it (to float32 rounding): the model
is loaded by sentence-transformers itself, from its ``modules.json`` (Transformer with the model's
``max_seq_length`` and truncation, Pooling in the mode the model declares, Dense, Normalize, ...),
and every batch runs through those modules' own ``preprocess`` and ``forward``. Nothing of
pooling or normalisation is re-implemented here. What differs from ``encode`` is the batching:

1. All texts of a call are tokenized once, with the prompt, by the model's own ``preprocess``
   (sentence-transformers 5.7 and later; it truncates as ``encode`` does), unpadded.
2. They are sorted by token count and cut into batches whose padded size stays within
   ``max_batch_tokens`` (``budget_batches`` with ``TRANSFORMER_MAX_PADDING``).
3. Each batch is padded to its own longest text as the tokenizer pads (side, pad id, token type),
   runs through the modules' ``forward`` (a features dict in, ``"sentence_embedding"`` out) and
   the vectors go back to input order.

A text's vector does not depend on its batch-mates: attention masks keep padding out, and each
batch is padded only to its own width. Where the model's ``preprocess`` takes no per-call processor
settings (older releases; 5.0 has no ``preprocess`` and tokenizes with ``tokenize``), or gives
something other than plain text rows, each batch is tokenized on its own by the model, with the
prompt and its length as that release's ``encode`` handles them; the batching is the same.

Prompts: ``prompt`` is prepended to every text; ``prompt_name`` picks one of the model's prompts
(``prompts``, from its ``config_sentence_transformers.json``); with neither, the model's
``default_prompt_name`` applies, as in ``encode``. A Pooling with ``include_prompt=False`` leaves
the prompt's tokens out (sentence-transformers passes it the prompt length). ``embed_queries``
embeds search queries with the model's ``"query"`` prompt when the model declares one (e5, bge and
the like), as ``encode_query`` does; for any other model it equals ``embed_texts``.

Safety: sentence-transformers is told ``use_safetensors=True`` for the Transformer's weights and
``trust_remote_code=False``; a module folder whose only weights are a pickle is refused before
anything loads (``st_files.pickled_weight_files``). A module folder named in ``modules.json`` but
absent (the packaged MiniLM's ``2_Normalize``) loads as sentence-transformers loads it: the module
with its default settings.

The weights are held in float32 and ``precision`` picks the autocast dtype (``auto``: bf16/fp16
on CUDA, exact float32 on CPU), as for the other embeddings here.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from actors.stack.base import DocumentEmbeddings, evaluating, ordinary
from actors.stack.batching import TRANSFORMER_MAX_PADDING, budget_batches, default_max_batch_tokens
from actors.stack.device import autocast, check_precision, pick_device
from actors.stack.registry import quiet_loading, resolve_transformer
from actors.stack.specs import SentenceTransformerSpec
from actors.stack.st_files import declared_prompts, pickled_weight_files

QUERY_PROMPT_NAME = "query"
GPU_MAX_BATCH_TOKENS = 32768
# Per-call processor settings for one unpadded tokenization of all texts (padding comes per batch).
_UNPADDED = {"text": {"padding": False}, "common": {"return_tensors": None}}
_CPU = torch.device("cpu")


@dataclass
class _Tokenized:
    """All texts of a call tokenized once: per-text id lists, and the features every batch shares."""

    rows: dict[str, list[list[int]]]
    shared: dict[str, Any]

    @property
    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.rows["input_ids"]]


class SentenceTransformerEmbeddings(DocumentEmbeddings):
    """One vector per text, as ``SentenceTransformer(model).encode(text, prompt=...)`` gives it.

    ``model``: a local folder, an object-storage folder or a hub name (see ``registry``);
    ``"default"`` is the packaged all-MiniLM-L6-v2. ``prompt`` (a string put before every text) or
    ``prompt_name`` (one of ``prompts``), not both. ``max_batch_tokens`` bounds a batch's padded
    tokens (default 2048 on CPU, 32768 on a GPU) and never changes the output. ``precision``:
    ``auto`` | ``float32`` | ``bfloat16`` | ``float16`` (see ``device.autocast_dtype``).

    ``embed_texts`` is the inference entry (float32 CPU ``[n, embedding_length]``); ``forward`` is
    the tensor-first entry for user models, on the module's device and, with ``fine_tune=True``,
    differentiable (the weights then require gradients and follow ``.train()``; by default they
    are frozen and stay in eval mode).
    """

    spec_class = SentenceTransformerSpec

    def __init__(
        self,
        model: str = "default",
        *,
        device: str | torch.device | None = None,
        precision: str = "auto",
        max_batch_tokens: int | None = None,
        fine_tune: bool = False,
        **settings: Any,
    ) -> None:
        super().__init__()
        self.spec = spec = SentenceTransformerSpec(model=model, **settings)
        prompt, prompt_name = spec.prompt, spec.prompt_name
        check_precision(precision)
        if max_batch_tokens is not None and max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens must be positive, got {max_batch_tokens}")

        self.model_name = model
        self.model_path = resolve_transformer(model).path
        target = pick_device(device)
        self.model = _load(self.model_path, target)
        self.fine_tune = bool(fine_tune)
        self.model.requires_grad_(self.fine_tune)
        self.precision = precision
        self.max_batch_tokens = (int(max_batch_tokens) if max_batch_tokens is not None
                                 else default_max_batch_tokens(target.type, GPU_MAX_BATCH_TOKENS))

        self.prompts: dict[str, str] = dict(self.model.prompts)
        if prompt_name is not None and prompt_name not in self.prompts:
            raise ValueError(
                f"prompt_name {prompt_name!r} is not one of the model's prompts: {sorted(self.prompts)}"
            )
        self.prompt = prompt
        self.prompt_name = prompt_name
        self.default_prompt_name: str | None = getattr(self.model, "default_prompt_name", None)
        self.text_prompt = self._resolve_prompt(prompt, prompt_name)
        self.query_prompt = self.prompts[QUERY_PROMPT_NAME] if self._declares_query_prompt() else self.text_prompt
        self.truncate_dim: int | None = getattr(self.model, "truncate_dim", None)

        self._unpadded = _has_unpadded_preprocess(self.model)
        self.embedding_length = self._dimension()
        self.eval()

    # ------------------------------------------------------------------ settings

    def _resolve_prompt(self, prompt: str | None, prompt_name: str | None) -> str | None:
        """The prompt ``encode(prompt=prompt, prompt_name=prompt_name)`` would use."""
        if prompt is not None:
            return prompt
        if prompt_name is not None:
            return self.prompts[prompt_name]
        if self.default_prompt_name is not None:
            return self.prompts.get(self.default_prompt_name)
        return None

    def _declares_query_prompt(self) -> bool:
        """Whether the model's own config names a ``"query"`` prompt (sentence-transformers 6 lists an
        empty one for every model); for a hub model, whether its loaded ``"query"`` prompt is non-empty."""
        if os.path.isdir(self.model_path):
            return QUERY_PROMPT_NAME in declared_prompts(self.model_path)
        return bool(self.prompts.get(QUERY_PROMPT_NAME))

    @property
    def max_seq_length(self) -> int | None:
        """Tokens per text after truncation (special tokens and prompt included), as the model says."""
        return self.model.max_seq_length

    @property
    def tokenizer(self) -> Any:
        return self.model.tokenizer

    @property
    def is_trainable(self) -> bool:
        return any(parameter.requires_grad for parameter in self.parameters())

    def _dimension(self) -> int:
        for name in ("get_embedding_dimension", "get_sentence_embedding_dimension"):
            method = getattr(self.model, name, None)
            if callable(method):
                dimension = method()
                if dimension is not None:
                    return int(dimension)
        with torch.inference_mode():
            return int(self._vectors([""], self.text_prompt, None, _CPU)[0].shape[-1])

    def train(self, mode: bool = True) -> "SentenceTransformerEmbeddings":
        """As ``nn.Module.train``, except that frozen weights stay in eval mode (no dropout noise)."""
        super().train(mode)
        if mode and not self.fine_tune:
            self.model.eval()
        return self

    # ------------------------------------------------------------------ embedding

    def embed_with_counts(self, texts: Sequence[str]) -> tuple[torch.Tensor, list[int]]:
        """Float32 CPU ``[len(texts), embedding_length]``, row ``i`` for ``texts[i]``, with ``text_prompt``;
        and each text's token count after truncation (prompt and special tokens included)."""
        return self._embed(texts, self.text_prompt, None)

    def embed_queries(self, texts: Sequence[str]) -> torch.Tensor:
        """As ``embed_texts``, for search queries: ``SentenceTransformer.encode_query``'s vectors.

        Uses the model's ``"query"`` prompt when its ``config_sentence_transformers.json`` declares
        one, else the same prompt as ``embed_texts``; the model's modules see ``task="query"``
        (which only a Router model acts on, sending queries down its query route).
        """
        return self._embed(texts, self.query_prompt, QUERY_PROMPT_NAME)[0]

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        """``[len(texts), embedding_length]`` on the module's device, for user models.

        Part of the autograd graph when gradients are enabled and the weights train
        (``fine_tune=True``); otherwise computed under ``torch.no_grad()``.
        """
        texts = _checked(texts)
        if torch.is_grad_enabled() and self.is_trainable:
            return self._vectors(texts, self.text_prompt, None, self.device)[0]
        with torch.no_grad():
            return self._vectors(texts, self.text_prompt, None, self.device)[0]

    def _embed(self, texts: Sequence[str], prompt: str | None, task: str | None) -> tuple[torch.Tensor, list[int]]:
        texts = _checked(texts)
        with torch.inference_mode(), evaluating(self):
            vectors, lengths = self._vectors(texts, prompt, task, _CPU)
        return ordinary([vectors])[0], lengths

    def _vectors(self, texts: list[str], prompt: str | None, task: str | None,
                 out: torch.device) -> tuple[torch.Tensor, list[int]]:
        """Float32 ``[n, dim]`` on ``out`` and each text's token count: batches by padded-token budget,
        longest first, then input order."""
        if not texts:
            return torch.zeros(0, self.embedding_length, device=out), []
        kwargs = {"task": task} if task is not None else {}
        tokenized = self._tokenize_all(texts, prompt, kwargs)
        lengths = tokenized.lengths if tokenized is not None else self._lengths(texts, prompt)
        device = self.device
        order: list[int] = []
        pieces: list[torch.Tensor] = []
        for batch in budget_batches(lengths, self.max_batch_tokens, max_padding=TRANSFORMER_MAX_PADDING):
            if tokenized is not None:
                features = self._padded(tokenized, batch)
            else:
                features = self._batch_features([texts[i] for i in batch], prompt, kwargs)
            features = {key: value.to(device) if torch.is_tensor(value) else value for key, value in features.items()}
            with autocast(device, self.precision):
                embedded = self.model(features, **kwargs)["sentence_embedding"]
            if self.truncate_dim is not None:
                embedded = embedded[..., : self.truncate_dim]
            pieces.append(embedded.float().to(out))
            order.extend(batch)
        inverse = torch.from_numpy(np.argsort(np.asarray(order, dtype=np.int64), kind="stable")).to(out)
        return torch.cat(pieces).index_select(0, inverse), [int(length) for length in lengths]

    # ------------------------------------------------------------------ tokenization

    def _tokenize_all(self, texts: list[str], prompt: str | None, kwargs: dict[str, Any]) -> _Tokenized | None:
        """One unpadded tokenization of every text by the model's own ``preprocess``; None where it cannot."""
        if not self._unpadded:
            return None
        features = self.model.preprocess(texts, prompt=prompt, processing_kwargs=_UNPADDED, **kwargs)
        ids = features.get("input_ids") if hasattr(features, "get") else None
        if (
            not isinstance(ids, list)
            or len(ids) != len(texts)
            or not all(isinstance(row, list) for row in ids)
            or features.get("modality", "text") != "text"
        ):
            return None  # not plain text rows (a chat-template or non-text model): pad per batch instead
        rows = {key: value for key, value in features.items() if isinstance(value, list) and len(value) == len(texts)}
        shared = {key: value for key, value in features.items() if key not in rows}
        return _Tokenized(rows, shared)

    def _padded(self, tokenized: _Tokenized, batch: list[int]) -> dict[str, Any]:
        """The batch's rows padded to its longest, as the tokenizer's ``padding=True`` pads them."""
        tokenizer = self.tokenizer
        rows = {key: [values[i] for i in batch] for key, values in tokenized.rows.items()}
        pad_values = {
            "input_ids": tokenizer.pad_token_id,
            "attention_mask": 0,
            "token_type_ids": getattr(tokenizer, "pad_token_type_id", 0),
            "special_tokens_mask": 1,
        }
        width = max(len(ids) for ids in rows["input_ids"])
        ragged = any(len(ids) != width for ids in rows["input_ids"])
        if any(key not in pad_values for key in rows) or (ragged and tokenizer.pad_token_id is None):
            # Rows this code does not know how to pad, or no pad token: the tokenizer decides (or refuses).
            padded = dict(tokenizer.pad(rows, padding=True, return_tensors="pt"))
        else:
            left = getattr(tokenizer, "padding_side", "right") == "left"
            padded = {key: _pad(values, width, pad_values[key] or 0, left) for key, values in rows.items()}
        return {**padded, **tokenized.shared}

    def _batch_features(self, texts: list[str], prompt: str | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        """One batch tokenized (padded) by the model itself, with the prompt as its ``encode`` adds it."""
        if hasattr(self.model, "preprocess"):
            return dict(self.model.preprocess(texts, prompt=prompt, **kwargs))
        # Releases without preprocess (5.0): encode prepends the prompt and passes its length along.
        if prompt:
            texts = [prompt + text for text in texts]
        features = dict(self.model.tokenize(texts, **kwargs))
        if prompt:
            length = self.model._get_prompt_length(prompt, **kwargs)
            if length is not None:
                features["prompt_length"] = length
        return features

    def _lengths(self, texts: list[str], prompt: str | None) -> list[int]:
        """Token counts for batching when each batch is tokenized on its own (they only steer batching)."""
        tokenizer = self.tokenizer
        if tokenizer is None:
            return [len(text) for text in texts]
        prompted = [(prompt or "") + text for text in texts]
        max_length = self.max_seq_length
        encoded = tokenizer(prompted, truncation=max_length is not None, max_length=max_length)
        return [len(ids) for ids in encoded["input_ids"]]


def _load(path: str, device: torch.device) -> nn.Module:
    """The model as sentence-transformers loads it: safetensors only, no remote code, float32 weights."""
    pickled = pickled_weight_files(path)
    if pickled:
        raise ValueError(
            f"sentence-transformers model {path!r} has module weights only as pickles ({', '.join(pickled)}); "
            "this project loads safetensors only: convert them (model.safetensors beside each)"
        )
    from sentence_transformers import SentenceTransformer

    quiet_loading()
    model = SentenceTransformer(
        path, device=str(device), trust_remote_code=False, model_kwargs={"use_safetensors": True}
    )
    if any(p.is_floating_point() and p.dtype != torch.float32 for p in model.parameters()):
        model.float()
    for module in model.modules():
        # FlashAttention's packed (unpadded) inputs would bypass the padded batches built here.
        if getattr(module, "can_flatten_inputs", False):
            module.unpad_inputs = False
    return model.eval()


def _has_unpadded_preprocess(model: nn.Module) -> bool:
    """Whether the model's input module takes per-call processor settings (5.7 does, 5.0 does not)."""
    import inspect

    preprocess = getattr(model[0], "preprocess", None) if len(model) else None
    if preprocess is None or not hasattr(model, "preprocess"):
        return False
    try:
        return "processing_kwargs" in inspect.signature(preprocess).parameters
    except (TypeError, ValueError):
        return False


def _pad(rows: list[list[int]], width: int, value: int, left: bool) -> torch.Tensor:
    padded = np.full((len(rows), width), value, dtype=np.int64)
    for i, row in enumerate(rows):
        if row:
            if left:
                padded[i, width - len(row) :] = row
            else:
                padded[i, : len(row)] = row
    return torch.from_numpy(padded)


def _checked(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not one string")
    texts = list(texts)
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{index}] is a {type(text).__name__}, not a str")
    return texts
