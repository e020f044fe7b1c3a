"""Liu et al.'s scalar mix of layers: ``gamma * sum_k softmax(w)_k * h_k``.

The parameters are laid out as AllenNLP's ``ScalarMix`` lays them out (a ``ParameterList`` of
one-element ``scalar_parameters`` and a one-element ``gamma``), so that mixing weights trained
with AllenNLP or Flair load with ``load_state_dict`` unchanged.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

# AllenNLP's ``tiny_value_of_dtype`` for float32/float64, keeping the variance away from zero.
_TINY = 1e-13


class ScalarMix(nn.Module):
    """A softmax-weighted, ``gamma``-scaled sum of ``mixture_size`` same-shaped tensors.

    ``initial_scalar_parameters`` are the raw (pre-softmax) weights; zeros give the plain mean.
    The parameters are frozen unless ``trainable`` is true, because at inference a stack's output
    must not drift; fine-tuning opts in.

    ``do_layer_norm`` normalises each tensor before mixing, as AllenNLP does, with one difference:
    the mean and variance are taken per item of the leading (batch) dimension over its unmasked
    elements, where AllenNLP pools them over the whole batch. Pooling over the batch would make a
    sentence's vectors depend on its batch-mates; for a batch of one the two agree.
    """

    def __init__(
        self,
        mixture_size: int,
        do_layer_norm: bool = False,
        initial_scalar_parameters: Sequence[float] | None = None,
        trainable: bool = False,
        gamma: float = 1.0,
    ) -> None:
        super().__init__()
        if mixture_size < 1:
            raise ValueError(f"mixture_size must be at least 1, got {mixture_size}")
        if initial_scalar_parameters is None:
            initial_scalar_parameters = [0.0] * mixture_size
        initial = [float(w) for w in initial_scalar_parameters]
        if len(initial) != mixture_size:
            raise ValueError(
                f"{len(initial)} scalar_mix weights given for {mixture_size} layers; give one per layer"
            )
        self.mixture_size = mixture_size
        self.do_layer_norm = do_layer_norm
        self.scalar_parameters = nn.ParameterList(
            [nn.Parameter(torch.tensor([w], dtype=torch.float32), requires_grad=trainable) for w in initial]
        )
        self.gamma = nn.Parameter(torch.tensor([float(gamma)], dtype=torch.float32), requires_grad=trainable)

    def normed_weights(self) -> torch.Tensor:
        """The softmax of the scalar parameters, ``[mixture_size]``."""
        return torch.softmax(torch.cat(list(self.scalar_parameters)), dim=0)

    def forward(self, tensors: Sequence[torch.Tensor] | torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mix ``tensors`` (a sequence, or a tensor whose first dimension indexes them).

        ``mask`` (``[batch, ...]`` without the last, feature dimension) marks the elements the
        layer-norm statistics read; it is only used with ``do_layer_norm``.
        """
        if len(tensors) != self.mixture_size:
            raise ValueError(f"{len(tensors)} tensors given to a ScalarMix of {self.mixture_size}")
        weights = self.normed_weights().to(tensors[0].device)
        gamma = self.gamma.to(tensors[0].device)
        if self.do_layer_norm:
            if mask is None:
                mask = torch.ones(tensors[0].shape[:-1], dtype=torch.bool, device=tensors[0].device)
            tensors = [_masked_layer_norm(tensor, mask) for tensor in tensors]
        mixed = weights[0] * tensors[0]
        for weight, tensor in zip(weights[1:], tensors[1:]):
            mixed = mixed + weight * tensor
        return gamma * mixed


def _masked_layer_norm(tensor: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(x - mean) / sqrt(var + tiny)`` with statistics per leading index over unmasked elements."""
    broadcast_mask = mask.unsqueeze(-1).to(tensor.dtype)
    dims = tuple(range(1, tensor.dim()))
    count = broadcast_mask.sum(dim=dims, keepdim=True).clamp(min=1) * tensor.shape[-1]
    masked = tensor * broadcast_mask
    mean = masked.sum(dim=dims, keepdim=True) / count
    variance = (((masked - mean) * broadcast_mask) ** 2).sum(dim=dims, keepdim=True) / count
    return (tensor - mean) / torch.sqrt(variance + _TINY)
