"""Flair's contextual string embeddings (Akbik et al., 2018), from Flair's own ``.pt`` files, without flair.

A character language model (forward or backward) reads the sentence as one string; a word's
vector is the LM's output at one character position. The semantics are those of flair 0.15.1's
``FlairEmbeddings`` and ``LanguageModel.get_representation``, so that the same model file gives
the same numbers:

- the text is the tokens joined by single spaces; the LM input is the model's document delimiter
  ("\\n"), the text (reversed for a backward LM) and one space;
- the forward LM's vector for a word is its output at the character after the word
  (``with_whitespace=True``) or at the word's last character; the backward LM's is its output
  before the word's first character (the position after it in the reversed string) or at it;
- characters missing from the model's dictionary read as ``<unk>`` (id 0); lengths are code points.

Unlike Flair, many sentences share one LSTM call: they are sorted by length and cut into batches
by a budget of total characters (``max_batch_chars``), and the LSTM runs on packed sequences:
no step is spent on padding (under CPU autocast it runs padded, see ``_runs_padded``). Each
sentence's recurrence sees only its own characters, so its vectors do not depend on its batch.
``chars_per_chunk`` runs the LSTM over slices of that many characters, carrying the state from
slice to slice, and keeps only the rows that are read: it bounds memory and never changes the
output.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from actors.stack.base import Sentences, TokenEmbeddings
from actors.stack.batching import total_budget_batches
from actors.stack.device import autocast, autocast_dtype, check_precision, pick_device
from actors.stack.registry import FLAIR_MODELS, resolve_file
from actors.stack.safe_pickle import FlairDictionary, load_flair_lm
from actors.stack.specs import FlairSpec

_RECURRENT = {"lstm": nn.LSTM, "gru": nn.GRU}


class CharLanguageModel(nn.Module):
    """Flair's ``LanguageModel`` without its decoder: char embedding → LSTM (or GRU) → optional projection.

    Submodule names match Flair's, so a Flair ``state_dict`` loads as is; the decoder (next-character
    prediction head) is not needed for embeddings and is dropped.
    """

    def __init__(
        self,
        n_chars: int,
        embedding_size: int,
        hidden_size: int,
        nlayers: int,
        nout: int | None = None,
        recurrent_type: str = "lstm",
    ) -> None:
        super().__init__()
        if recurrent_type not in _RECURRENT:
            raise ValueError(f"recurrent_type {recurrent_type!r} is not one of {sorted(_RECURRENT)}")
        self.encoder = nn.Embedding(n_chars, embedding_size)
        self.rnn = _RECURRENT[recurrent_type](embedding_size, hidden_size, nlayers)
        self.proj = nn.Linear(hidden_size, nout) if nout is not None else None
        self.output_size = nout if nout is not None else hidden_size

    def forward(self, char_ids: torch.Tensor, hidden: Any = None) -> tuple[torch.Tensor, Any]:
        """``char_ids`` [time, batch] → (outputs [time, batch, output_size], state to carry on)."""
        output, hidden = self.rnn(self.encoder(char_ids), hidden)
        if self.proj is not None:
            output = self.proj(output)
        return output, hidden

    def forward_packed(self, char_ids: torch.Tensor, steps: torch.Tensor, hidden: Any = None) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """As ``forward`` for columns sorted longest first, column ``b`` being ``steps[b]`` long: no step on padding.

        Returns the outputs packed time-major (``[sum(steps), output_size]``; step ``t`` holds the
        first ``batch_sizes[t]`` columns), ``batch_sizes`` (CPU) and each column's state after its
        last step. An LSTM never looks ahead, so the outputs are those of ``forward``.
        """
        packed = nn.utils.rnn.pack_padded_sequence(self.encoder(char_ids), steps, enforce_sorted=True)
        output, hidden = self.rnn(packed, hidden)
        data = output.data if self.proj is None else self.proj(output.data)
        return data, output.batch_sizes, hidden

    @classmethod
    def from_flair_state(cls, state: dict[str, Any], source: str) -> "CharLanguageModel":
        """Build from ``load_flair_lm``'s dict; fails naming ``source`` if the weights do not fit."""
        weights = {k: v for k, v in state["state_dict"].items() if not k.startswith("decoder.")}
        if "encoder.weight" not in weights:
            raise ValueError(f"{source}: state_dict has no 'encoder.weight'")
        model = cls(
            n_chars=weights["encoder.weight"].shape[0],
            embedding_size=state["embedding_size"],
            hidden_size=state["hidden_size"],
            nlayers=state["nlayers"],
            nout=state["nout"],
            recurrent_type=state["recurrent_type"],
        )
        try:
            model.load_state_dict(weights, strict=True)
        except RuntimeError as error:
            raise ValueError(f"{source}: weights do not fit the architecture its settings describe: {error}") from None
        return model


@dataclass(frozen=True)
class _LMInput:
    """One sentence as the LM reads it: character ids and, per token, the position whose output is its vector."""

    char_ids: list[int]
    positions: list[int]


def _lower_keeping_length(text: str) -> str:
    # Flair lowercases the whole string but reads offsets from the original tokens; a character
    # whose lowercase is longer (e.g. "İ") would shift every later offset, so it is kept as is.
    return "".join(low if len(low := char.lower()) == 1 else char for char in text)


def lm_input(
    tokens: Sequence[str],
    dictionary: FlairDictionary,
    is_forward_lm: bool,
    with_whitespace: bool,
    delimiter: str = "\n",
    is_lower: bool = False,
    tokenized_lm: bool = True,
) -> tuple[str, _LMInput]:
    """The LM input string of one sentence, its char ids and the positions read (Flair's offset rules).

    ``tokenized_lm`` (Flair's default) joins the tokens by single spaces. Otherwise the LM reads the
    text as written, each token followed by its ``whitespace_after`` spaces (tokens from
    ``actors.text.tokenize`` carry it; plain strings count as followed by one), the end stripped,
    as Flair's ``Sentence.to_plain_string()``; offsets then skip one position after a token only
    where whitespace follows it, exactly as Flair reads them.
    """
    gaps = [1 if tokenized_lm else int(getattr(token, "whitespace_after", 1)) for token in tokens]
    text = "".join(token + " " * gap for token, gap in zip(tokens, gaps)).rstrip() if tokens else ""
    lm_text = _lower_keeping_length(text) if is_lower else text
    string = f"{delimiter}{lm_text if is_forward_lm else lm_text[::-1]} "
    positions: list[int] = []
    offset_forward = len(delimiter)
    offset_backward = len(text) + len(delimiter)
    for token, gap in zip(tokens, gaps):
        offset_forward += len(token)
        at = offset_forward if is_forward_lm else offset_backward
        positions.append(at if with_whitespace else at - 1)
        if gap:
            offset_forward += 1
            offset_backward -= 1
        offset_backward -= len(token)
    return string, _LMInput(dictionary.char_ids(string), positions)


def resolve_flair_model(model: str | os.PathLike[str]) -> str:
    """Local path of ``model``: a path, a URL / object-storage path, or a published id (any case, as in Flair)."""
    return resolve_file("flair", os.fspath(model), FLAIR_MODELS).path


class FlairEmbeddings(TokenEmbeddings):
    """Contextual string embeddings from one Flair character LM (forward or backward).

    Args (names and meaning as in Flair):
        model: a local ``.pt`` path, a URL or object-storage path, or a published id such as
            ``news-forward`` (see ``registry.FLAIR_MODELS``); missing files raise ``ModelNotFoundError``.
        with_whitespace: read the state at the whitespace after a word (forward LM) / before it
            (backward LM) instead of at the word's own boundary character.
        chars_per_chunk: characters per LSTM call; bounds memory, never changes the output.
        is_lower: lowercase the text before the LM reads it (for LMs trained on lowercased text).
        tokenized_lm: the LM reads the tokens joined by single spaces (Flair's default); False reads
            the text as written, from each token's ``whitespace_after``.
        max_batch_chars: characters per batch, all sentences together (packed: padding costs nothing).
            A stack's ``max_batch_tokens`` is accepted and not used: a char LM's budget is characters.
        device: where the LM runs (default: the first GPU, else the CPU).
        precision: ``auto`` | ``float32`` | ``bfloat16`` | ``float16``: ``auto`` autocasts on GPU and is
            exact float32 on CPU; an explicit ``bfloat16`` autocasts on CPU too (3-5x faster for a
            2048-wide LSTM on CPUs with AMX, see ``device.autocast_dtype``).
        fine_tune: let the LM's weights train through ``forward`` (as Flair's ``fine_tune``); by
            default they are frozen.
    """

    spec_class = FlairSpec

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        max_batch_chars: int = 32768,
        max_batch_tokens: int | None = None,
        device: str | torch.device | None = None,
        precision: str = "auto",
        fine_tune: bool = False,
        **settings: Any,
    ) -> None:
        super().__init__()
        self.spec = spec = FlairSpec(model=os.fspath(model), **settings)
        if max_batch_chars < 1:
            raise ValueError(f"max_batch_chars must be >= 1, got {max_batch_chars}")
        check_precision(precision)
        with_whitespace, chars_per_chunk, is_lower = spec.with_whitespace, spec.chars_per_chunk, spec.is_lower
        self.tokenized_lm = spec.tokenized_lm
        self.model = spec.model
        self.model_path = resolve_flair_model(spec.model)
        state = load_flair_lm(self.model_path)
        self.lm = CharLanguageModel.from_flair_state(state, self.model_path)
        self.dictionary: FlairDictionary = state["dictionary"]
        self.is_forward_lm: bool = state["is_forward_lm"]
        self.document_delimiter: str = state["document_delimiter"]
        self.with_whitespace = with_whitespace
        self.chars_per_chunk = chars_per_chunk
        self.is_lower = is_lower
        self.max_batch_chars = max_batch_chars
        self.precision = precision
        self.name = self.model_path
        self.embedding_length = self.lm.output_size
        # Flair pads with the space character; which id pads does not change any output read.
        self._pad_id = self.dictionary.id_of(" ", 0)
        self.fine_tune = bool(fine_tune)
        self.requires_grad_(self.fine_tune)
        self.eval()
        self.to(pick_device(device))

    def _pretrained_modules(self) -> list[nn.Module]:
        return [self.lm]

    def lm_input(self, tokens: Sequence[str]) -> tuple[str, _LMInput]:
        """The exact string this LM reads for ``tokens`` and the char ids and positions used."""
        return lm_input(
            tokens, self.dictionary, self.is_forward_lm, self.with_whitespace, self.document_delimiter, self.is_lower,
            self.tokenized_lm,
        )

    def _vectors(self, sentences: Sentences, out: torch.device) -> list[torch.Tensor]:
        inputs = [self.lm_input(sentence)[1] for sentence in sentences]
        results: list[torch.Tensor] = [torch.zeros(0, self.embedding_length, device=out) for _ in sentences]
        todo = [i for i, sentence in enumerate(sentences) if len(sentence) > 0]
        lengths = [len(inputs[i].char_ids) for i in todo]
        device = self.device
        padded = self._runs_padded(device)
        # Padded (CPU autocast): a bf16 step costs about 1.3 ms plus 0.03 ms a column on a
        # 2048-wide LSTM, so wide batches matter more than padding; cut where it would pass half.
        batches = total_budget_batches(lengths, self.max_batch_chars, max_padding=0.5 if padded else None)
        with autocast(device, self.precision):
            for batch in batches:
                indexes = [todo[j] for j in batch]
                vectors = self._embed_batch([inputs[i] for i in indexes], device, out, padded)
                for index, tensor in zip(indexes, vectors):
                    results[index] = tensor
        return results

    def _runs_padded(self, device: torch.device) -> bool:
        """Whether the LSTM runs on padded rather than packed batches: under CPU autocast.

        oneDNN's fused bf16/fp16 LSTM, which CPU autocast uses, takes padded input only; on packed
        input CPU autocast falls back to a per-step loop no faster than float32.
        """
        return device.type == "cpu" and autocast_dtype(device, self.precision) is not None

    def _embed_batch(self, batch: list[_LMInput], device: torch.device, out: torch.device,
                     padded: bool) -> list[torch.Tensor]:
        """Run the LM over a batch chunk by chunk, as packed sequences (no step is spent on padding)
        or ``padded``, keeping only the rows tokens read (returned on ``out``)."""
        order = sorted(range(len(batch)), key=lambda c: -len(batch[c].char_ids))
        items = [batch[c] for c in order]
        lengths = torch.tensor([len(item.char_ids) for item in items], dtype=torch.long)
        longest = int(lengths[0])
        ids = torch.full((longest, len(items)), self._pad_id, dtype=torch.long)
        for column, item in enumerate(items):
            ids[: len(item.char_ids), column] = torch.tensor(item.char_ids, dtype=torch.long)
        positions = torch.tensor([p for item in items for p in item.positions], dtype=torch.long)
        columns = torch.tensor([c for c, item in enumerate(items) for _ in item.positions], dtype=torch.long)
        # One host-to-device copy per batch: ids, positions and columns travel together.
        packed = torch.cat([ids.flatten(), positions, columns]).to(device, non_blocking=True)
        ids = packed[: ids.numel()].view(longest, len(items))
        positions, columns = packed[ids.numel():].view(2, -1)

        rows = torch.empty(positions.numel(), self.embedding_length, dtype=torch.float32, device=device)
        if padded:
            # oneDNN's bf16 LSTM runs 3-5x slower per step on some batch widths (131, 218, 239
            # columns) and smoothly on multiples of 16: round up with columns nobody reads.
            ids = torch.cat([ids, ids.new_full((longest, -ids.shape[1] % 16), self._pad_id)], dim=1)
        hidden = None
        for start in range(0, longest, self.chars_per_chunk):
            end = min(start + self.chars_per_chunk, longest)
            # Columns still running at ``start`` are a prefix (longest first); the others are done.
            active = int((lengths > start).sum())
            if padded:
                active = min(ids.shape[1], -(-active // 16) * 16)
            if hidden is not None:
                hidden = tuple(h[:, :active] for h in hidden) if isinstance(hidden, tuple) else hidden[:, :active]
            wanted = (positions >= start) & (positions < end)
            if padded:
                # Steps past a column's end only write rows nobody reads, and a column that ends in
                # this chunk is not carried into the next, so padding changes no output.
                output, hidden = self.lm(ids[start:end, :active], hidden)
                rows[wanted] = output[positions[wanted] - start, columns[wanted]].float()
                continue
            steps = lengths[:active].clamp(max=end) - start
            output, batch_sizes, hidden = self.lm.forward_packed(ids[start:end, :active], steps, hidden)
            offsets = torch.cat([batch_sizes.new_zeros(1), batch_sizes.cumsum(0)[:-1]]).to(device)
            rows[wanted] = output[offsets[positions[wanted] - start] + columns[wanted]].float()
        rows = rows.to(out)
        parts = rows.split([len(item.positions) for item in items])
        result: list[torch.Tensor] = [parts[0]] * len(items)
        for column, part in zip(order, parts):
            result[column] = part.clone()
        return result
