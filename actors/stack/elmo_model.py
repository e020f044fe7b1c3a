"""AllenNLP's ELMo bidirectional language model, in plain torch, loading AllenNLP's published files.

The ``allennlp`` package no longer installs beside current torch, so the network is rebuilt here
from its parts: character ids (``ELMoCharacterMapper``), the character CNN with highway layers and
a projection (``_ElmoCharacterEncoder``), and two stacks of LSTM cells with cell and projection
clipping (``LstmCellWithProjection`` inside ``ElmoLstm``). The weights come from the TensorFlow
checkpoint layout that AllenNLP's ``weights.hdf5`` files keep, converted exactly as AllenNLP does,
so the outputs match ``_ElmoBiLm`` to float32 rounding.

One deliberate difference: AllenNLP's ``ElmoLstm`` is stateful (a batch starts from the states the
previous batch left). Here every sentence starts from zero state, so a sentence's vectors never
depend on what was embedded before it or beside it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import h5py
import numpy as np
import torch
from torch import nn

# ELMoCharacterMapper's special characters (before the +1 shift that frees id 0 for padding tokens).
BOS_CHAR, EOS_CHAR, BOW_CHAR, EOW_CHAR, PAD_CHAR = 256, 257, 258, 259, 260
BOS_TOKEN, EOS_TOKEN = "<S>", "</S>"


@dataclass(frozen=True)
class ElmoOptions:
    """The parts of AllenNLP's ``options.json`` that shape the network."""

    char_embed_dim: int
    filters: tuple[tuple[int, int], ...]
    n_highway: int
    activation: str
    max_chars: int
    n_characters: int
    cell_dim: int
    projection_dim: int
    n_layers: int
    cell_clip: float | None
    proj_clip: float | None

    @classmethod
    def from_dict(cls, options: dict[str, Any]) -> "ElmoOptions":
        cnn, lstm = options["char_cnn"], options["lstm"]
        if lstm.get("use_skip_connections") is False:
            # AllenNLP's ElmoLstm always adds them; a file saying otherwise would not match it.
            raise ValueError("ELMo options with use_skip_connections=false are not supported")
        return cls(
            char_embed_dim=int(cnn["embedding"]["dim"]),
            filters=tuple((int(w), int(n)) for w, n in cnn["filters"]),
            n_highway=int(cnn["n_highway"]),
            activation=str(cnn["activation"]),
            max_chars=int(cnn.get("max_characters_per_token", 50)),
            n_characters=int(cnn.get("n_characters", 262)),
            cell_dim=int(lstm["dim"]),
            projection_dim=int(lstm["projection_dim"]),
            n_layers=int(lstm["n_layers"]),
            cell_clip=lstm.get("cell_clip") or None,
            proj_clip=lstm.get("proj_clip") or None,
        )


def _special_word(char: int, max_chars: int) -> list[int]:
    ids = [PAD_CHAR] * max_chars
    ids[0], ids[1], ids[2] = BOW_CHAR, char, EOW_CHAR
    return [c + 1 for c in ids]


def word_char_ids(word: str, max_chars: int = 50) -> list[int]:
    """A token's character ids as AllenNLP's ``ELMoCharacterMapper`` builds them.

    UTF-8 bytes (invalid code points dropped), cut to ``max_chars - 2`` so the word markers fit,
    padded with the padding character, every id shifted by one. ``<S>`` and ``</S>`` are the
    sentence boundary tokens, exactly as in AllenNLP (a literal ``<S>`` token gets their ids too).
    """
    if word == BOS_TOKEN:
        return _special_word(BOS_CHAR, max_chars)
    if word == EOS_TOKEN:
        return _special_word(EOS_CHAR, max_chars)
    encoded = word.encode("utf-8", "ignore")[: max_chars - 2]
    ids = [PAD_CHAR] * max_chars
    ids[0] = BOW_CHAR
    ids[1 : len(encoded) + 1] = encoded
    ids[len(encoded) + 1] = EOW_CHAR
    return [c + 1 for c in ids]


def batch_char_ids(sentences: Sequence[Sequence[str]], max_chars: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """Char ids ``[batch, max_len + 2, max_chars]`` with ``<S>``/``</S>`` around each sentence, and lengths.

    Padding tokens are all zeros, as in AllenNLP; ``lengths`` count the boundary tokens.
    """
    lengths = [len(s) + 2 for s in sentences]
    ids = torch.zeros(len(sentences), max(lengths, default=2), max_chars, dtype=torch.long)
    for i, sentence in enumerate(sentences):
        words = [BOS_TOKEN, *sentence, EOS_TOKEN]
        ids[i, : len(words)] = torch.tensor([word_char_ids(w, max_chars) for w in words])
    return ids, torch.tensor(lengths, dtype=torch.long)


class CharCnnEncoder(nn.Module):
    """Token vectors from characters: embedding, one conv per filter width, max over time, highway, projection."""

    def __init__(self, options: ElmoOptions):
        super().__init__()
        self.options = options
        self.char_embedding = nn.Embedding(options.n_characters, options.char_embed_dim)
        self.convs = nn.ModuleList(
            nn.Conv1d(options.char_embed_dim, num, kernel_size=width) for width, num in options.filters
        )
        n_filters = sum(num for _, num in options.filters)
        # One linear per highway layer: [nonlinear part | gate], as in AllenNLP's Highway.
        self.highways = nn.ModuleList(nn.Linear(n_filters, 2 * n_filters) for _ in range(options.n_highway))
        self.projection = nn.Linear(n_filters, options.projection_dim)
        self._activation = torch.tanh if options.activation == "tanh" else torch.relu

    def forward(self, char_ids: torch.Tensor) -> torch.Tensor:
        """``[n_tokens, max_chars]`` ids → ``[n_tokens, projection_dim]``."""
        chars = self.char_embedding(char_ids).transpose(1, 2)
        # Max over time first, then the activation: AllenNLP's order (they commute only for monotone ones).
        convolved = [self._activation(conv(chars).max(dim=-1).values) for conv in self.convs]
        x = torch.cat(convolved, dim=-1)
        for layer in self.highways:
            nonlinear, gate = layer(x).chunk(2, dim=-1)
            gate = torch.sigmoid(gate)
            x = gate * x + (1 - gate) * torch.relu(nonlinear)
        return self.projection(x)


class LstmCellWithProjection(nn.Module):
    """The weights of one direction of one layer: AllenNLP's ``LstmCellWithProjection`` (gates i, f, g, o)."""

    def __init__(self, input_size: int, hidden_size: int, cell_size: int):
        super().__init__()
        self.cell_size = cell_size
        self.input_linearity = nn.Linear(input_size, 4 * cell_size, bias=False)
        self.state_linearity = nn.Linear(hidden_size, 4 * cell_size, bias=True)
        self.state_projection = nn.Linear(cell_size, hidden_size, bias=False)


def _run_cells(
    cells: Sequence[LstmCellWithProjection],
    inputs: torch.Tensor,
    cell_clip: float | None,
    proj_clip: float | None,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Run one layer's cells, one per stream, over ``inputs [streams, batch, time, in]`` from zero state.

    Every sequence starts at time 0 and padding only follows it, so padded steps never reach a real
    output. Streams (forward, reversed backward) run side by side in one batched matmul per step.
    States are kept in ``dtype`` even where autocast lowers the matmuls.
    """
    streams, batch, steps, _ = inputs.shape
    cell_size = cells[0].cell_size
    w_in = torch.stack([c.input_linearity.weight.t() for c in cells]).to(dtype)
    w_state = torch.stack([c.state_linearity.weight.t() for c in cells]).to(dtype)
    b_state = torch.stack([c.state_linearity.bias for c in cells]).unsqueeze(1).to(dtype)
    w_proj = torch.stack([c.state_projection.weight.t() for c in cells]).to(dtype)
    hidden = w_proj.shape[-1]
    # All time steps' input projections at once: [streams, batch, time, 4 * cell].
    flat = inputs.to(dtype).reshape(streams, batch * steps, -1)
    projected_inputs = torch.bmm(flat, w_in).view(streams, batch, steps, -1)
    memory = inputs.new_zeros(streams, batch, cell_size, dtype=dtype)
    state = inputs.new_zeros(streams, batch, hidden, dtype=dtype)
    # Collected and stacked once: writing into a preallocated tensor step by step would make the
    # backward pass (fine-tuning) copy the whole output once per step.
    outputs: list[torch.Tensor] = []
    for t in range(steps):
        gates = (projected_inputs[:, :, t] + torch.baddbmm(b_state, state, w_state)).to(dtype)
        input_gate, forget_gate, memory_init, output_gate = gates.split(cell_size, dim=-1)
        memory = torch.sigmoid(input_gate) * torch.tanh(memory_init) + torch.sigmoid(forget_gate) * memory
        if cell_clip:
            memory = memory.clamp(-cell_clip, cell_clip)
        state = torch.bmm(torch.sigmoid(output_gate) * torch.tanh(memory), w_proj).to(dtype)
        if proj_clip:
            state = state.clamp(-proj_clip, proj_clip)
        outputs.append(state)
    if not outputs:
        return inputs.new_zeros(streams, batch, 0, hidden, dtype=dtype)
    return torch.stack(outputs, dim=2)


def reverse_within_lengths(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each row of ``x [batch, time, ...]`` within its own length, leaving padding in place."""
    steps = x.shape[1]
    positions = torch.arange(steps, device=x.device).unsqueeze(0)
    lengths = lengths.to(x.device).unsqueeze(1)
    index = torch.where(positions < lengths, lengths - 1 - positions, positions)
    index = index.view(*index.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, index)


class ElmoBiLm(nn.Module):
    """The whole ELMo network: char ids in, the three layers of ``_ElmoBiLm`` out (boundaries included)."""

    def __init__(self, options: ElmoOptions):
        super().__init__()
        self.options = options
        self.char_encoder = CharCnnEncoder(options)
        dim, cell = options.projection_dim, options.cell_dim
        self.forward_layers = nn.ModuleList(LstmCellWithProjection(dim, dim, cell) for _ in range(options.n_layers))
        self.backward_layers = nn.ModuleList(LstmCellWithProjection(dim, dim, cell) for _ in range(options.n_layers))
        self.cell_clip = options.cell_clip
        self.proj_clip = options.proj_clip

    @property
    def output_dim(self) -> int:
        return 2 * self.options.projection_dim

    def forward(
        self, char_ids: torch.Tensor, lengths: torch.Tensor, recurrence_dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """``[batch, time, max_chars]`` ids and ``[batch]`` lengths → ``[n_layers + 1, batch, time, 2 * proj]``.

        Layer 0 is the token representation twice ([x | x]); layer k is [forward | backward] of LSTM
        layer k, with the skip connection from layer k-1 for k > 1. Padding positions are zero.
        ``recurrence_dtype`` (default: the weights' dtype) is what the LSTMs compute in: the clipped
        recurrence amplifies float32 rounding over long sentences, float64 keeps it at the
        reference's own level (see ``ELMoEmbeddings``).
        """
        batch, steps, _ = char_ids.shape
        dtype = self.char_encoder.projection.weight.dtype
        recurrence_dtype = recurrence_dtype or dtype
        mask = torch.arange(steps, device=char_ids.device).unsqueeze(0) < lengths.to(char_ids.device).unsqueeze(1)
        # The CNN sees real tokens only: padding rows would be masked out anyway.
        tokens = char_ids.new_zeros(batch, steps, self.options.projection_dim, dtype=dtype)
        tokens[mask] = self.char_encoder(char_ids[mask]).to(dtype)
        layers = [torch.cat([tokens, tokens], dim=-1)]
        # Stream 0 reads left to right; stream 1 reads each sentence reversed within its length.
        x = torch.stack([tokens, reverse_within_lengths(tokens, lengths)]).to(recurrence_dtype)
        for index, cells in enumerate(zip(self.forward_layers, self.backward_layers)):
            out = _run_cells(cells, x, self.cell_clip, self.proj_clip, recurrence_dtype)
            if index != 0:
                out = out + x  # skip connection, as AllenNLP's ElmoLstm adds for every layer after the first
            x = out
            backward = reverse_within_lengths(out[1], lengths)
            layers.append((torch.cat([out[0], backward], dim=-1) * mask.unsqueeze(-1)).to(dtype))
        return torch.stack(layers)


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _tf_gates_to_torch(matrix: np.ndarray, cell: int) -> np.ndarray:
    """TensorFlow packs gates as i, j (memory), f, o along axis 0; AllenNLP's cell wants i, f, j, o."""
    out = matrix.copy()
    out[cell : 2 * cell], out[2 * cell : 3 * cell] = matrix[2 * cell : 3 * cell], matrix[cell : 2 * cell]
    return out


@torch.no_grad()
def load_elmo_weights(model: ElmoBiLm, weight_file: str) -> None:
    """Copy AllenNLP's ``weights.hdf5`` (TensorFlow layouts) into ``model``, converted as AllenNLP does."""
    options, enc = model.options, model.char_encoder
    with h5py.File(weight_file, "r") as fin:
        char_embed = fin["char_embed"][...]
        # Row 0 is the padding-token id, which TensorFlow never had: it stays zero.
        weights = np.zeros((char_embed.shape[0] + 1, char_embed.shape[1]), dtype=np.float32)
        weights[1:] = char_embed
        enc.char_embedding.weight.copy_(_tensor(weights))
        for i, conv in enumerate(enc.convs):
            w = np.transpose(fin["CNN"][f"W_cnn_{i}"][...].squeeze(axis=0), axes=(2, 1, 0))
            conv.weight.copy_(_tensor(w))
            conv.bias.copy_(_tensor(fin["CNN"][f"b_cnn_{i}"][...]))
        for k, layer in enumerate(enc.highways):
            group = fin[f"CNN_high_{k}"]
            # TF computes (1 - g) * x + g * f(x); AllenNLP's Highway g * x + (1 - g) * f(x): negate the gate.
            w = np.concatenate([np.transpose(group["W_transform"][...]), -np.transpose(group["W_carry"][...])])
            b = np.concatenate([group["b_transform"][...], -group["b_carry"][...]])
            layer.weight.copy_(_tensor(w))
            layer.bias.copy_(_tensor(b))
        enc.projection.weight.copy_(_tensor(np.transpose(fin["CNN_proj"]["W_proj"][...])))
        enc.projection.bias.copy_(_tensor(fin["CNN_proj"]["b_proj"][...]))
        for direction, cells in enumerate((model.forward_layers, model.backward_layers)):
            for layer_index, cell in enumerate(cells):
                group = fin[f"RNN_{direction}"]["RNN"]["MultiRNNCell"][f"Cell{layer_index}"]["LSTMCell"]
                size = options.cell_dim
                # W_0 stacks the input and recurrent matrices: [input_size + hidden, 4 * cell].
                w = _tf_gates_to_torch(np.transpose(group["W_0"][...]), size)
                input_size = cell.input_linearity.in_features
                cell.input_linearity.weight.copy_(_tensor(w[:, :input_size]))
                cell.state_linearity.weight.copy_(_tensor(w[:, input_size:]))
                bias = group["B"][...].astype(np.float32)
                bias[2 * size : 3 * size] += 1.0  # TF's LSTMCell adds forget_bias=1 at run time.
                cell.state_linearity.bias.copy_(_tensor(_tf_gates_to_torch(bias, size)))
                cell.state_projection.weight.copy_(_tensor(np.transpose(group["W_P_0"][...])))
