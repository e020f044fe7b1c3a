"""The one interface every token embedding implements.

Embeddings are ``torch.nn.Module``s, so that users can put them inside their own models:
``.to(device)``, ``.train()`` / ``.eval()``, ``state_dict()``, and parameters an optimizer sees.
There are two entries:

- ``embed(sentences)`` is the inference entry the pipeline uses: float32 CPU tensors, one per
  sentence, never attached to a graph, computed in eval mode whatever mode the module is in.
- ``forward(sentences)`` (``emb(sentences)``) is the tensor-first entry for models:
  ``(padded [batch, max_tokens, dim], mask [batch, max_tokens])`` on the module's device. While
  gradients are enabled and the module has trainable parameters (``fine_tune=True``, or a
  trainable scalar mix), the output is part of the autograd graph, so a loss computed on it
  trains those parameters together with the user's head.

Pretrained weights are frozen by default (``requires_grad`` False, and their submodules stay in
eval mode when the user's model calls ``.train()``, so frozen features carry no dropout noise and
equal ``embed()``'s). ``fine_tune=True`` opts in: the weights get gradients and follow
``.train()`` / ``.eval()`` like any other layer.
"""
from __future__ import annotations

import contextlib
from typing import Any, ClassVar, Iterator, Sequence

import torch
from torch import nn

from actors.stack.specs import Runtime, StackSpec

Sentences = Sequence[Sequence[str]]

_CPU = torch.device("cpu")


class SpecModule(nn.Module):
    """A module built from one stack spec, which describes it (sentence-transformers' habit).

    ``spec_class`` names the spec; the constructor validates its settings into ``self.spec``;
    ``get_config_dict()`` gives them back and ``load()`` builds from them. Runtime options
    (``device``, ``precision``, ``max_batch_tokens``, ``fine_tune``) are keyword arguments beside
    the settings and never part of the spec.
    """

    spec_class: ClassVar[type[StackSpec]]
    spec: StackSpec

    @classmethod
    def from_spec(cls, spec: StackSpec, runtime: Runtime) -> "SpecModule":
        """Build from a spec and runtime options (what ``spec.build()`` calls)."""
        return cls(**spec.model_dump(), **runtime.kwargs())

    @classmethod
    def load(cls, config: dict[str, Any], runtime: Runtime | None = None) -> "SpecModule":
        """Build from ``get_config_dict()``'s settings, as sentence-transformers' modules load."""
        return cls.from_spec(cls.spec_class.model_validate(config), runtime or Runtime())

    def get_config_dict(self) -> dict[str, Any]:
        """The settings that define this embedding's output: its spec's fields."""
        return self.spec.model_dump()

    def model_files(self) -> list[str]:
        """Local files whose bytes define this embedding's output (the spec resolves them)."""
        return self.spec.files()



class DocumentEmbeddings(SpecModule):
    """Whole texts in, one float32 vector each out (sentence-transformers, flair's document embeddings).

    ``embed_texts(texts)`` returns ``[len(texts), embedding_length]`` on the CPU, computed under
    ``torch.inference_mode()``, independent of batch composition. ``embed_with_counts`` also says
    how many model tokens each text was read as (after truncation): the output's ``n_tokens``.
    """

    embedding_length: int

    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        return self.embed_with_counts(texts)[0]

    def embed_with_counts(self, texts: Sequence[str]) -> tuple[torch.Tensor, list[int]]:
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        for tensor in self.parameters():
            return tensor.device
        return _CPU


class TokenEmbeddings(SpecModule):
    """Base class: pre-tokenized sentences in, one ``[n_tokens, embedding_length]`` tensor out each.

    Subclasses set ``embedding_length`` and implement ``_vectors(sentences, out)``: one float32
    tensor per sentence on device ``out``, built with ordinary (differentiable) torch operations
    and moved to ``out`` at most once per batch. ``embed`` runs it for the CPU under
    ``torch.inference_mode()`` and eval mode; ``forward`` runs it for the module's device, with
    autograd when something can be trained. Subclasses must be batch-invariant: a sentence gets
    the same vectors whatever else is in its batch.

    Subclasses holding pretrained weights set ``fine_tune`` and list those submodules in
    ``_pretrained_modules`` (kept in eval mode unless fine-tuning).

    Each subclass is built from one spec (``actors.stack.specs``): ``spec_class`` names it, the
    constructor validates its settings into ``self.spec``, and ``get_config_dict()`` /
    ``load()`` round-trip it. Runtime options (``device``, ``precision``, ``max_batch_tokens``,
    ``fine_tune``) are keyword arguments beside the settings and never part of the spec.
    """

    embedding_length: int
    fine_tune: bool = False

    def embed(self, sentences: Sentences) -> list[torch.Tensor]:
        """Embed ``sentences``; returns float32 CPU tensors, one per sentence, in input order.

        Computed under ``torch.inference_mode()``. A caller outside inference mode gets ordinary
        tensors (no grad), which may feed a model that trains; inside it (the pipeline), no copy.
        """
        with torch.inference_mode(), evaluating(self):
            vectors = self._vectors(sentences, _CPU)
        return ordinary(vectors)

    def _vectors(self, sentences: Sentences, out: torch.device) -> list[torch.Tensor]:
        """One float32 ``[n_tokens, embedding_length]`` tensor per sentence, on ``out``."""
        if type(self).embed is not TokenEmbeddings.embed:
            # A subclass that only implements ``embed``: usable in a stack, but never differentiable.
            return [vector.to(out) for vector in self.embed(sentences)]
        raise NotImplementedError(f"{type(self).__name__} implements neither _vectors nor embed")

    def forward(self, sentences: Sentences) -> tuple[torch.Tensor, torch.Tensor]:
        """Tensor-first entry for user models: ``(padded [batch, max_tokens, dim], mask [batch, max_tokens])``.

        Both live on the module's device; padding positions are zero and ``mask`` is False there.
        The result joins the autograd graph when gradients are enabled and any parameter of this
        module requires them; otherwise it is computed under ``torch.no_grad()``.
        """
        with self._grad_context():
            vectors = self._vectors(sentences, self.device)
        return pad_vectors(vectors, self.embedding_length, self.device)

    def _grad_context(self) -> contextlib.AbstractContextManager:
        """Ambient grad mode when something here can learn, else ``no_grad`` (plain tensors, no graph)."""
        if torch.is_grad_enabled() and self.is_trainable:
            return contextlib.nullcontext()
        return torch.no_grad()

    @property
    def is_trainable(self) -> bool:
        """Whether any parameter of this module (fine-tuned weights, a trainable mix) requires grad."""
        return any(parameter.requires_grad for parameter in self.parameters())

    def _pretrained_modules(self) -> list[nn.Module]:
        """The submodules holding pretrained weights (frozen unless ``fine_tune``)."""
        return []

    def train(self, mode: bool = True) -> "TokenEmbeddings":
        """As ``nn.Module.train``, except that frozen pretrained submodules stay in eval mode."""
        super().train(mode)
        if mode and not self.fine_tune:
            for module in self._pretrained_modules():
                module.eval()
        return self

    @property
    def device(self) -> torch.device:
        for tensor in self.parameters():
            return tensor.device
        for tensor in self.buffers():
            return tensor.device
        return _CPU


def ordinary(vectors: list[torch.Tensor]) -> list[torch.Tensor]:
    """``vectors`` made inside inference mode, as ordinary tensors unless the caller is in it too.

    Inference tensors cannot be saved for backward, so a head trained on them would fail.
    """
    if torch.is_inference_mode_enabled():
        return vectors
    return [vector.clone() if vector.is_inference() else vector for vector in vectors]


@contextlib.contextmanager
def evaluating(module: nn.Module) -> Iterator[None]:
    """Put ``module`` in eval mode for the block, then restore every submodule's own mode."""
    modes = [(sub, sub.training) for sub in module.modules()]
    if not any(training for _, training in modes):
        yield
        return
    module.eval()
    try:
        yield
    finally:
        for sub, training in modes:
            sub.training = training


def pad_vectors(
    vectors: list[torch.Tensor], dim: int, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad per-sentence ``[n_i, dim]`` tensors into ``[batch, max_n, dim]`` plus a boolean mask.

    Differentiable (one ``pad_sequence``), and on ``device`` (default: the first tensor's, else CPU).
    """
    if device is None:
        device = vectors[0].device if vectors else _CPU
    if not vectors:
        return torch.zeros(0, 0, dim, device=device), torch.zeros(0, 0, dtype=torch.bool, device=device)
    vectors = [vector.to(device) for vector in vectors]
    lengths = torch.tensor([vector.shape[0] for vector in vectors], device=device)
    padded = nn.utils.rnn.pad_sequence(vectors, batch_first=True)
    mask = torch.arange(padded.shape[1], device=device).unsqueeze(0) < lengths.unsqueeze(1)
    return padded, mask
