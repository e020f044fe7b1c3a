"""Flair's ``TransformerWordEmbeddings``: one vector per pre-tokenized word from a Hugging Face encoder.

The numbers match flair 0.15.1 on the same model files. How a word's vector is made:

1. The fast tokenizer splits each word into WordPieces (``is_split_into_words=True``) and says which
   word each piece came from (``word_ids()``). A word with no pieces (a zero-width character, say)
   gets an exact zero vector; its neighbours keep their own pieces, so alignment never shifts.
2. A sentence longer than the model's window (``model_max_length``, special tokens included) runs
   as overlapping windows with ``stride = model_max_length // 2`` pieces of overlap, as the
   tokenizer's ``return_overflowing_tokens`` cuts them. Each piece is then read from exactly one
   window, the one where it has the most context: for a window of 512 and a stride of 256,
   positions ``[0:383)`` of the first window, ``[129:383)`` of each middle one and ``[129:)`` of the
   last (Flair's ``combine_strided_tensors``). No word is ever truncated.
3. The chosen ``hidden_states`` layers (0 is the embedding output) are combined: mean, sum,
   concatenation in the listed order, or a scalar mix.
4. A word's pieces are pooled: first, last, first_last (``[first | last]``) or mean.

Windows of all sentences are batched together, longest first, under a padded-token budget; a
window's vectors do not depend on its batch-mates (attention masks), and a piece is read from
the same window whichever batch it lands in, so results are batch-invariant.

Frozen embeddings built from the same files share one loaded encoder (a weak cache keyed by
path and device). ``fine_tune=True`` loads a private copy whose weights train; a shared encoder
is never modified in place by training or by ``load_state_dict`` (which makes a private copy
first when the incoming weights differ). ``.to(device)`` moves the encoder the embedding runs;
for a shared encoder that moves it for every embedding sharing it.
"""
from __future__ import annotations

import copy
import os
import threading
import weakref
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from actors.stack.base import Sentences, TokenEmbeddings, evaluating, ordinary
from actors.stack.batching import TRANSFORMER_MAX_PADDING, budget_batches, default_max_batch_tokens
from actors.stack.device import autocast, check_precision, pick_device
from actors.stack.registry import quiet_loading, resolve_transformer
from actors.stack.scalar_mix import ScalarMix
from actors.stack.specs import TransformerSpec

# Padded pieces per forward pass on a GPU when none is set, for this module and
# transformer_document (on a CPU: batching.CPU_MAX_BATCH_TOKENS).
GPU_MAX_BATCH_TOKENS = 8192

# Tokenizers that do not know their window report a huge sentinel; beyond this we ask the config.
_UNSET_MAX_LENGTH = 1_000_000


@dataclass(eq=False)
class _LoadedModel:
    """A tokenizer and a frozen encoder, shared by every embedding built from the same files.

    Sharing matters on GPUs: a stack that reads two layer settings of one model holds its
    weights once. The weights are frozen and only read, so sharing cannot change any output.
    """

    tokenizer: Any
    model: nn.Module
    num_hidden_states: int
    max_length: int


_CACHE: "weakref.WeakValueDictionary[tuple[str, str], _LoadedModel]" = weakref.WeakValueDictionary()
_CACHE_LOCK = threading.Lock()


def _load(path: str, device: torch.device) -> _LoadedModel:
    """Load (or reuse) the tokenizer and encoder at ``path`` on ``device``; safetensors only."""
    key = (os.path.abspath(path) if os.path.isdir(path) else path, str(device))
    with _CACHE_LOCK:
        loaded = _CACHE.get(key)
        if loaded is not None and _module_device(loaded.model) == device:
            return loaded
        loaded = _load_uncached(path, device)
        _CACHE[key] = loaded
        return loaded


def _load_uncached(path: str, device: torch.device) -> _LoadedModel:
    from transformers import AutoModel, AutoTokenizer

    quiet_loading()
    tokenizer = AutoTokenizer.from_pretrained(path, use_fast=True)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"transformer model {path!r} has no fast tokenizer (tokenizer.json); word alignment "
            "needs the fast tokenizer's word_ids()"
        )
    # use_safetensors: never unpickle a pytorch_model.bin. float(): the reference outputs are
    # float32, and transformers 5 would otherwise keep a half-precision checkpoint's dtype.
    model = AutoModel.from_pretrained(path, output_hidden_states=True, use_safetensors=True)
    model = model.float().eval().requires_grad_(False).to(device)
    max_length = int(tokenizer.model_max_length)
    if max_length >= _UNSET_MAX_LENGTH:
        max_length = min(int(getattr(model.config, "max_position_embeddings", 512)), 512)
    probe = tokenizer([["a"]], is_split_into_words=True, return_tensors="pt")
    with torch.inference_mode():
        hidden_states = model(input_ids=probe["input_ids"].to(device)).hidden_states
    return _LoadedModel(tokenizer, model, len(hidden_states), max_length)


def _module_device(module: nn.Module) -> torch.device:
    for tensor in module.parameters():
        return tensor.device
    return torch.device("cpu")


def parse_layers(layers: str | int | Sequence[int], num_hidden_states: int) -> list[int]:
    """``"all"`` or a comma list of indexes into ``hidden_states`` (negatives count from the top)."""
    if isinstance(layers, str):
        if layers.strip() == "all":
            return list(range(num_hidden_states))
        try:
            indexes = [int(part) for part in layers.split(",") if part.strip()]
        except ValueError:
            raise ValueError(f"layers must be 'all' or a comma list of integers, got {layers!r}") from None
    elif isinstance(layers, int):
        indexes = [layers]
    else:
        indexes = [int(index) for index in layers]
    if not indexes:
        raise ValueError("layers names no layer")
    for index in indexes:
        if not -num_hidden_states <= index < num_hidden_states:
            raise ValueError(
                f"layer {index} out of range: the model has {num_hidden_states} hidden states "
                f"(0 = embedding output, 1..{num_hidden_states - 1} = transformer layers)"
            )
    return indexes


@dataclass
class _Row:
    """One window of one sentence, and what its positions contribute to the output.

    ``targets`` index the call's flat output ``[n_words_total * parts, dim]``; ``weights`` are
    1 for first/last pooling and ``1 / n_pieces`` for mean pooling.
    """

    input_ids: list[int]
    positions: np.ndarray
    targets: np.ndarray
    weights: np.ndarray


def _kept_range(window: int, n_windows: int, length: int, left: int, step: int, half: int) -> tuple[int, int]:
    """Positions of a window whose pieces are read from it (Flair's ``combine_strided_tensors``).

    Window ``k`` starts ``k * step`` pieces into the sentence; consecutive windows overlap by
    ``stride`` pieces, and the overlap is split in the middle (``half`` pieces each side), so every
    piece is read from exactly one window, away from its edges.
    """
    if n_windows == 1:
        return 0, length
    start = 0 if window == 0 else left + half
    stop = length if window == n_windows - 1 else left + step + half
    return start, min(stop, length)


def _pool_plan(words: np.ndarray, pooling: str, n_words: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which pieces (indexes into ``words``) feed which output slot, with what weight.

    ``words`` lists the word id of every piece of a sentence in reading order. Returns
    ``(piece_index, slot, weight)``; ``slot = word * parts + part``.
    """
    if words.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.float32)
    starts = np.ones(words.size, dtype=bool)
    starts[1:] = words[1:] != words[:-1]
    ends = np.ones(words.size, dtype=bool)
    ends[:-1] = words[1:] != words[:-1]
    if pooling == "first":
        index = np.flatnonzero(starts)
        return index, words[index], np.ones(index.size, dtype=np.float32)
    if pooling == "last":
        index = np.flatnonzero(ends)
        return index, words[index], np.ones(index.size, dtype=np.float32)
    if pooling == "first_last":
        first, last = np.flatnonzero(starts), np.flatnonzero(ends)
        index = np.concatenate([first, last])
        slot = np.concatenate([words[first] * 2, words[last] * 2 + 1])
        return index, slot, np.ones(index.size, dtype=np.float32)
    counts = np.bincount(words, minlength=n_words).astype(np.float32)
    index = np.arange(words.size)
    return index, words, (1.0 / counts[words]).astype(np.float32)


class TransformerWordEmbeddings(TokenEmbeddings):
    """Word vectors from a transformer encoder, with Flair's arguments and semantics.

    ``model``: a local folder, an object-storage folder or a hub name (see ``registry``);
    ``"default"`` is the packaged all-MiniLM-L6-v2. ``layers``: ``"all"`` or a comma list of
    ``hidden_states`` indexes (0 = embedding output). ``layer_mean`` averages them, otherwise they
    are concatenated in the listed order. ``use_scalar_mix`` mixes them instead with
    ``scalar_mix_gamma * sum_k softmax(scalar_mix_weights)_k * h_k`` (uniform weights by default;
    ``scalar_mix_layer_norm`` normalises each layer first, per window). ``layer_combine`` names the
    combination outright (mean | sum | concat | scalar_mix) and then overrides both flags.
    ``subtoken_pooling``: first | last | first_last | mean.

    ``fine_tune=True`` loads a private copy of the encoder whose weights require gradients, so
    that a loss on ``forward``'s output trains them; by default they are frozen and shared.
    ``scalar_mix_trainable`` makes the mix's weights and gamma parameters that train with the
    user's model (default: as ``fine_tune``).

    ``allow_long_sentences=False`` does what Flair does: a sentence is cut to one window and the
    words past it get zero vectors. ``max_batch_tokens`` bounds padded pieces per forward pass and
    never changes the output. ``precision`` (``auto`` | ``float32`` | ``bfloat16`` | ``float16``) picks
    the autocast dtype: ``auto`` is bf16/fp16 on CUDA and exact float32 on CPU; an explicit
    ``bfloat16`` autocasts on CPU as well (fast on CPUs with AMX, see ``device.autocast_dtype``).

    ``embed_cls`` gives one vector per sentence, the encoder's state at the ``[CLS]`` position of
    the sentence's first window, with the chosen layers combined as for the words; its width is
    ``hidden_size``.
    """

    spec_class = TransformerSpec

    def __init__(
        self,
        model: str = "default",
        *,
        max_batch_tokens: int | None = None,
        device: str | torch.device | None = None,
        precision: str = "auto",
        fine_tune: bool = False,
        scalar_mix_trainable: bool | None = None,
        **settings: Any,
    ) -> None:
        super().__init__()
        self.spec = spec = TransformerSpec(model=model, **settings)
        target = pick_device(device)
        if max_batch_tokens is None:
            max_batch_tokens = default_max_batch_tokens(target.type, GPU_MAX_BATCH_TOKENS)
        layer_combine = spec.layer_combine or ("scalar_mix" if spec.use_scalar_mix else ("mean" if spec.layer_mean else "concat"))
        check_precision(precision)
        if max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens must be positive, got {max_batch_tokens}")
        layers, subtoken_pooling, allow_long_sentences = spec.layers, spec.subtoken_pooling, spec.allow_long_sentences

        self.model_name = model
        self.model_path = resolve_transformer(model).path
        self.fine_tune = bool(fine_tune)
        if self.fine_tune:
            # Never train the shared copy: other embeddings read it.
            self._loaded = _load_uncached(self.model_path, target)
            self._loaded.model.requires_grad_(True)
        else:
            self._loaded = _load(self.model_path, target)
        self._shared = not self.fine_tune
        self.tokenizer = self._loaded.tokenizer
        self.model = self._loaded.model

        self.layers = layers
        self.layer_indexes = parse_layers(layers, self._loaded.num_hidden_states)
        self.layer_combine = layer_combine
        self.subtoken_pooling = subtoken_pooling
        self.allow_long_sentences = allow_long_sentences
        self.max_batch_tokens = int(max_batch_tokens)
        self.precision = precision
        self.max_length = self._loaded.max_length
        self.stride = self.max_length // 2 if allow_long_sentences else 0

        self.scalar_mix: ScalarMix | None = None
        if layer_combine == "scalar_mix":
            self.scalar_mix = ScalarMix(
                len(self.layer_indexes),
                do_layer_norm=spec.scalar_mix_layer_norm,
                initial_scalar_parameters=spec.scalar_mix_weights,
                gamma=spec.scalar_mix_gamma,
                trainable=self.fine_tune if scalar_mix_trainable is None else bool(scalar_mix_trainable),
            ).to(target)

        hidden_size = int(self.model.config.hidden_size)
        self._combined_width = hidden_size * (len(self.layer_indexes) if layer_combine == "concat" else 1)
        self._parts = 2 if subtoken_pooling == "first_last" else 1
        self.embedding_length = self._combined_width * self._parts
        self.register_load_state_dict_pre_hook(_privatize_before_load)
        self.eval()

    @property
    def hidden_size(self) -> int:
        """Width of ``embed_cls``'s vectors: the combined layers' width, without first_last's doubling."""
        return self._combined_width

    def _pretrained_modules(self) -> list[nn.Module]:
        return [self.model]

    def _privatize(self) -> None:
        """Give this embedding its own copy of a shared encoder (before anything writes to it)."""
        if self._shared:
            self.model = copy.deepcopy(self.model)
            self._shared = False

    # ------------------------------------------------------------------ settings

    def get_config_dict(self) -> dict[str, Any]:
        """The spec's settings, with a trained scalar mix's current weights and gamma."""
        config = super().get_config_dict()
        if self.scalar_mix is not None:
            config["scalar_mix_weights"] = [float(p.item()) for p in self.scalar_mix.scalar_parameters]
            config["scalar_mix_gamma"] = float(self.scalar_mix.gamma.item())
        return config

    # ------------------------------------------------------------------ embedding

    def _vectors(self, sentences: Sentences, out: torch.device) -> list[torch.Tensor]:
        """Float32 ``[n_words, embedding_length]`` per sentence, on ``out``."""
        sentences = [list(sentence) for sentence in sentences]
        starts = np.cumsum([0] + [len(sentence) for sentence in sentences])
        flat = torch.zeros(int(starts[-1]) * self._parts, self._combined_width, device=out)
        rows = self._plan(sentences, starts)
        if rows:
            flat = self._run(rows, flat)
        flat = flat.view(int(starts[-1]), self.embedding_length)
        return [flat[starts[i] : starts[i + 1]].clone() for i in range(len(sentences))]

    def embed_cls(self, sentences: Sentences) -> list[torch.Tensor]:
        """One float32 CPU ``[hidden_size]`` vector per sentence: the combined layers at ``[CLS]``.

        The ``[CLS]`` position of the sentence's first window (the tokenizer's ``cls_token``; for a
        model that puts it last, as XLNet does, that position; without one, position 0). An empty
        sentence gets a zero vector, as it does under mean pooling.
        """
        with torch.inference_mode(), evaluating(self):
            vectors = self._cls_vectors(sentences, torch.device("cpu"))
        return ordinary(vectors)

    def _cls_vectors(self, sentences: Sentences, out: torch.device) -> list[torch.Tensor]:
        sentences = [list(sentence) for sentence in sentences]
        flat = torch.zeros(len(sentences), self._combined_width, device=out)
        todo = [i for i, sentence in enumerate(sentences) if sentence]
        if todo:
            encoding = self.tokenizer(
                [sentences[i] for i in todo],
                is_split_into_words=True,
                truncation=True,
                max_length=self.max_length,
                add_special_tokens=True,
            )
            rows = []
            for sample, index in enumerate(todo):
                ids = list(encoding["input_ids"][sample])
                rows.append(
                    _Row(
                        input_ids=ids,
                        positions=np.array([self._cls_position(ids)], dtype=np.int64),
                        targets=np.array([index], dtype=np.int64),
                        weights=np.ones(1, dtype=np.float32),
                    )
                )
            flat = self._run(rows, flat)
        return [flat[i].clone() for i in range(len(sentences))]

    def _cls_position(self, input_ids: list[int]) -> int:
        cls_id = self.tokenizer.cls_token_id
        if cls_id is None or not input_ids or input_ids[0] == cls_id or cls_id not in input_ids:
            return 0
        return len(input_ids) - 1 - input_ids[::-1].index(cls_id)

    def _plan(self, sentences: list[list[str]], starts: np.ndarray) -> list[_Row]:
        """Tokenize into windows and work out which positions feed which output slot."""
        todo = [i for i, sentence in enumerate(sentences) if sentence]
        if not todo:
            return []
        encoding = self.tokenizer(
            [sentences[i] for i in todo],
            is_split_into_words=True,
            truncation=True,
            max_length=self.max_length,
            stride=self.stride,
            return_overflowing_tokens=self.allow_long_sentences,
            add_special_tokens=True,
        )
        n_rows = len(encoding["input_ids"])
        mapping = encoding["overflow_to_sample_mapping"] if self.allow_long_sentences else list(range(n_rows))
        windows_of: dict[int, list[int]] = {}
        for row, sample in enumerate(mapping):
            windows_of.setdefault(int(sample), []).append(row)

        content = self.max_length - self.tokenizer.num_special_tokens_to_add(pair=False)
        step, half = content - self.stride, self.stride // 2
        rows: list[_Row] = []
        for sample, windows in windows_of.items():
            sentence_index = todo[sample]
            piece_rows, piece_positions, piece_words = [], [], []
            for k, row in enumerate(windows):
                word_ids = np.array([-1 if w is None else w for w in encoding.word_ids(row)], dtype=np.int64)
                left = int(np.argmax(word_ids >= 0)) if (word_ids >= 0).any() else 0
                lo, hi = _kept_range(k, len(windows), len(word_ids), left, step, half)
                positions = lo + np.flatnonzero(word_ids[lo:hi] >= 0)
                piece_rows.append(np.full(positions.size, k, dtype=np.int64))
                piece_positions.append(positions)
                piece_words.append(word_ids[positions])
            window_of_piece = np.concatenate(piece_rows)
            position_of_piece = np.concatenate(piece_positions)
            words = np.concatenate(piece_words)
            n_words = len(sentences[sentence_index])
            index, slot, weight = _pool_plan(words, self.subtoken_pooling, n_words)
            target = int(starts[sentence_index]) * self._parts + slot
            for k, row in enumerate(windows):
                mine = window_of_piece[index] == k
                if not mine.any():
                    continue
                rows.append(
                    _Row(
                        input_ids=list(encoding["input_ids"][row]),
                        positions=position_of_piece[index[mine]],
                        targets=target[mine],
                        weights=weight[mine],
                    )
                )
        return rows

    def _run(self, rows: list[_Row], flat: torch.Tensor) -> torch.Tensor:
        """Run the windows in length-sorted, budgeted batches and add their parts into ``flat``.

        ``flat`` may live on the CPU (``embed``) or on the model's device (``forward``); each batch's
        pooled parts cross devices at most once. Differentiable when gradients are enabled.
        """
        device = self.device
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        lengths = [len(row.input_ids) for row in rows]
        for batch in budget_batches(lengths, self.max_batch_tokens, max_padding=TRANSFORMER_MAX_PADDING):
            width = max(lengths[i] for i in batch)
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
            for local, i in enumerate(batch):
                ids = rows[i].input_ids
                input_ids[local, : len(ids)] = torch.tensor(ids, dtype=torch.long)
                attention_mask[local, : len(ids)] = 1
            row_of = np.concatenate([np.full(rows[i].positions.size, local) for local, i in enumerate(batch)])
            positions = np.concatenate([rows[i].positions for i in batch])
            targets = np.concatenate([rows[i].targets for i in batch])
            weights = np.concatenate([rows[i].weights for i in batch])
            slots, slot_of = np.unique(targets, return_inverse=True)

            input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
            row_of_t = torch.from_numpy(row_of.astype(np.int64)).to(device)
            positions_t = torch.from_numpy(positions.astype(np.int64)).to(device)
            slot_of_t = torch.from_numpy(slot_of.astype(np.int64).reshape(-1)).to(device)
            weights_t = torch.from_numpy(weights.astype(np.float32)).to(device)

            with autocast(device, self.precision):
                hidden_states = self.model(input_ids=input_ids, attention_mask=attention_mask).hidden_states
            combined = self._combine(hidden_states, attention_mask)
            values = combined[row_of_t, positions_t] * weights_t[:, None]
            pooled = torch.zeros(slots.size, combined.shape[-1], device=device).index_add_(0, slot_of_t, values)
            slots_t = torch.from_numpy(slots.astype(np.int64)).to(flat.device)
            flat.index_add_(0, slots_t, pooled.to(flat.device))
        return flat

    def _combine(self, hidden_states: Sequence[torch.Tensor], attention_mask: torch.Tensor) -> torch.Tensor:
        """The chosen layers as one ``[batch, positions, width]`` float32 tensor."""
        layers = [hidden_states[i].float() for i in self.layer_indexes]
        if self.layer_combine == "concat":
            return torch.cat(layers, dim=-1)
        if self.layer_combine == "scalar_mix":
            assert self.scalar_mix is not None
            return self.scalar_mix(layers, attention_mask.bool())
        stacked = torch.stack(layers)
        return stacked.mean(dim=0) if self.layer_combine == "mean" else stacked.sum(dim=0)


def _privatize_before_load(module: TransformerWordEmbeddings, state_dict: dict[str, Any], prefix: str, *_: Any) -> None:
    """``load_state_dict`` pre-hook: weights that differ from a shared encoder's go into a private copy.

    Loading copies in place, so writing into the shared encoder would change every embedding
    built from the same files. Loading the unchanged pretrained weights keeps the sharing.
    """
    if not module._shared:
        return
    own = module.model.state_dict()
    model_prefix = f"{prefix}model."
    for name, value in state_dict.items():
        if not name.startswith(model_prefix):
            continue
        current = own.get(name[len(model_prefix) :])
        if (
            current is None
            or not isinstance(value, torch.Tensor)
            or value.shape != current.shape
            or not torch.equal(value.to(current.device, current.dtype), current)
        ):
            module._privatize()
            return
