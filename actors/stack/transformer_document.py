"""Flair's ``TransformerDocumentEmbeddings``: one vector per raw text from a Hugging Face encoder.

The numbers match flair 0.15.1's ``TransformerDocumentEmbeddings(model, layers, layer_mean,
cls_pooling)`` embedding ``Sentence(text)``. What flair does, and so what this module does:

1. The text becomes flair's tokens (``actors.text.tokenize``: ``Sentence(text)`` with the segtok
   tokenizer). Only the token texts reach the transformer: ``TransformerBaseEmbeddings.
   __build_transformer_model_inputs`` calls the tokenizer on ``[t.text for t in tokens]`` with
   ``is_split_into_words=True``; ``whitespace_after`` and character offsets play no part. So
   "don't" reaches the model as the words "do" and "n't", and a newline like a space.
2. Special tokens are the tokenizer's own (``[CLS] ... [SEP]`` for BERT models).
3. Long texts are **truncated**, not windowed: ``TransformerDocumentEmbeddings`` leaves
   ``allow_long_sentences`` at ``TransformerEmbeddings``' default ``False``, so ``stride`` is 0,
   no overflowing windows are asked for, and ``truncation=True`` cuts every text to the
   tokenizer's ``model_max_length`` pieces, special tokens included (512 for MiniLM: ``[CLS]``,
   the first 510 WordPieces, ``[SEP]``). Everything after that is ignored, whatever the pooling.
   (``combine_strided_tensors`` only runs with ``allow_long_sentences=True``, which the word
   embeddings use, not this one.)
4. ``TransformerEmbeddings.forward`` takes the chosen ``hidden_states`` (index 0 is the embedding
   output; ``"all"`` is every one) and averages them (``layer_mean=True``) or concatenates them
   in the listed order.
5. Pooling (``forward``, ``document_mean_pooling``, ``document_max_pooling``,
   ``document_cls_pooling``): ``cls`` takes position 0 when the tokenizer puts ``[CLS]`` first
   (``_has_initial_cls_token``), else the last real position; ``mean`` and ``max`` run over the
   first ``n`` positions, ``n`` being the number of ids that are not the pad id
   (``sub_token_lengths``): ``[CLS]`` and ``[SEP]`` included.

Where we differ, on purpose: an empty text (no tokens) gets a zero vector (flair would embed
``[CLS] [SEP]``); flair adds a ``[FLERT]`` special token to its tokenizer (a context separator it
does not use here; segtok splits brackets off words, so the text never reaches it), which we
leave out.

Texts are batched longest first under a padded-token budget (``budget_batches``); attention masks
keep a text's vector independent of its batch-mates, so results do not depend on batching.
Frozen embeddings share the loaded tokenizer and encoder with ``TransformerWordEmbeddings``
built from the same files (``transformer._load``).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from actors.stack.base import DocumentEmbeddings, evaluating
from actors.stack.batching import TRANSFORMER_MAX_PADDING, budget_batches, default_max_batch_tokens
from actors.stack.device import autocast, check_precision, pick_device
from actors.stack.registry import resolve_transformer
from actors.stack.specs import TransformerDocumentSpec
from actors.stack.transformer import GPU_MAX_BATCH_TOKENS, _load, _load_uncached, parse_layers
from actors.text import tokenize


class TransformerDocumentEmbeddings(DocumentEmbeddings):
    """One float32 vector per text, as flair's ``TransformerDocumentEmbeddings`` gives it.

    ``layers``: ``"all"`` or a comma list of ``hidden_states`` indexes; ``layer_mean`` averages
    them, else they are concatenated (``embedding_length`` = hidden size x number of layers).
    ``cls_pooling``: ``cls``, ``mean`` or ``max`` over the text's pieces (see the module doc).
    ``precision``: ``auto`` is float32 on CPU (exact to flair) and bf16/fp16 autocast on CUDA.
    """

    spec_class = TransformerDocumentSpec

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
        self.spec = spec = TransformerDocumentSpec(model=model, **settings)
        layers, layer_mean, cls_pooling = spec.layers, spec.layer_mean, spec.cls_pooling
        check_precision(precision)
        target = pick_device(device)
        budget = (default_max_batch_tokens(target.type, GPU_MAX_BATCH_TOKENS) if max_batch_tokens is None
                  else int(max_batch_tokens))
        if budget < 1:
            raise ValueError(f"max_batch_tokens must be positive, got {max_batch_tokens}")

        self.model_name = model
        self.model_path = resolve_transformer(model).path
        self.fine_tune = bool(fine_tune)
        if self.fine_tune:
            # Never train the shared copy: other embeddings read it.
            loaded = _load_uncached(self.model_path, target)
            loaded.model.requires_grad_(True)
        else:
            loaded = _load(self.model_path, target)
        self._loaded = loaded  # holds the shared cache entry alive
        self.tokenizer = loaded.tokenizer
        self.model = loaded.model
        self.max_length = loaded.max_length

        self.layers = layers
        self.layer_indexes = parse_layers(layers, loaded.num_hidden_states)
        self.layer_mean = bool(layer_mean)
        self.cls_pooling = cls_pooling
        self.precision = precision
        self.max_batch_tokens = budget
        self.pad_id = self.tokenizer.pad_token_id
        self.initial_cls_token = self._has_initial_cls_token()

        hidden_size = int(self.model.config.hidden_size)
        self.embedding_length: int = hidden_size * (1 if self.layer_mean else len(self.layer_indexes))
        self.eval()

    def _has_initial_cls_token(self) -> bool:
        """flair's test: does the tokenizer put ``[CLS]`` first (BERT) or last (XLNet, GPT-2)?"""
        ids = self.tokenizer.encode("a")
        return bool(ids) and ids[0] == self.tokenizer.cls_token_id

    # ------------------------------------------------------------------ embedding

    def embed_with_counts(self, texts: Sequence[str]) -> tuple[torch.Tensor, list[int]]:
        """``[len(texts), embedding_length]`` float32 on the CPU (a text without tokens gives zeros),
        and the number of pieces each text was read as (special tokens included, after truncation)."""
        return self.embed_words([tokenize(text) for text in texts])

    def embed_words(self, sentences: Sequence[Sequence[str]]) -> tuple[torch.Tensor, list[int]]:
        """Like ``embed_with_counts`` for texts already split into flair's tokens."""
        counts = [0] * len(sentences)
        with torch.inference_mode(), evaluating(self):
            out = torch.zeros(len(sentences), self.embedding_length)
            todo = [i for i, words in enumerate(sentences) if len(words)]
            if todo:
                rows = self._encode([list(sentences[i]) for i in todo])
                self._run(rows, todo, out)
                for i, ids in zip(todo, rows):
                    counts[i] = len(ids)
        return out, counts

    def _encode(self, sentences: list[list[str]]) -> list[list[int]]:
        """Token texts to ids as flair does: words pre-split, special tokens added, truncated."""
        encoding = self.tokenizer(
            sentences,
            is_split_into_words=True,
            truncation=True,
            max_length=self.max_length,
            add_special_tokens=True,
        )
        return [list(ids) for ids in encoding["input_ids"]]

    def _run(self, rows: list[list[int]], targets: list[int], out: torch.Tensor) -> None:
        """Run the rows in length-sorted, budgeted batches; write each pooled vector to ``out[target]``."""
        device = self.device
        pad_id = self.pad_id if self.pad_id is not None else 0
        row_lengths = [len(ids) for ids in rows]
        for batch in budget_batches(row_lengths, self.max_batch_tokens, max_padding=TRANSFORMER_MAX_PADDING):
            width = max(row_lengths[i] for i in batch)
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
            lengths = torch.zeros(len(batch), dtype=torch.long)
            for local, i in enumerate(batch):
                ids = torch.tensor(rows[i], dtype=torch.long)
                input_ids[local, : ids.numel()] = ids
                attention_mask[local, : ids.numel()] = 1
                # flair's sub_token_lengths: ids that are not the pad id (a literal pad id counts out)
                lengths[local] = int((ids != self.pad_id).sum()) if self.pad_id is not None else ids.numel()
            input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
            with autocast(device, self.precision):
                hidden_states = self.model(input_ids=input_ids, attention_mask=attention_mask).hidden_states
            pooled = self._pool(self._combine(hidden_states), lengths.to(device))
            out[torch.tensor([targets[i] for i in batch])] = pooled.float().cpu()

    def _combine(self, hidden_states: Sequence[torch.Tensor]) -> torch.Tensor:
        """The chosen layers as one float32 ``[batch, positions, width]`` tensor (mean or concat)."""
        layers = [hidden_states[i].float() for i in self.layer_indexes]
        if self.layer_mean:
            return torch.stack(layers).mean(dim=0)
        return torch.cat(layers, dim=-1)

    def _pool(self, states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """One vector per row: flair's ``cls`` / ``mean`` / ``max`` over the first ``lengths`` positions."""
        rows = torch.arange(states.shape[0], device=states.device)
        if self.cls_pooling == "cls":
            return states[:, 0] if self.initial_cls_token else states[rows, (lengths - 1).clamp(min=0)]
        inside = torch.arange(states.shape[1], device=states.device)[None, :] < lengths[:, None]
        if self.cls_pooling == "mean":
            total = (states * inside[..., None]).sum(dim=1)
            return total / lengths.clamp(min=1)[:, None].to(total.dtype)
        return states.masked_fill(~inside[..., None], float("-inf")).amax(dim=1)
