"""Build a stack from the config's ``stack:`` section (``[{"transformer": {...}}, {"flair": {...}}]``)."""
from __future__ import annotations

import importlib
import inspect
from typing import Any

from actors.stack.base import TokenEmbeddings
from actors.stack.stacked import StackedEmbeddings

_CLASSES = {
    "transformer": ("actors.stack.transformer", "TransformerWordEmbeddings"),
    "flair": ("actors.stack.flair", "FlairEmbeddings"),
    "elmo": ("actors.stack.elmo", "ELMoEmbeddings"),
    "word": ("actors.stack.word", "WordEmbeddings"),
}


def _spec_of(config: Any) -> list[dict[str, Any]]:
    if hasattr(config, "stack_spec"):
        return config.stack_spec()
    if isinstance(config, dict) and "stack" in config:
        config = config["stack"]
    spec = []
    for layer in config:
        if hasattr(layer, "kind"):
            spec.append({layer.kind: layer.settings.model_dump()})
        else:
            spec.append(dict(layer))
    return spec


def build_layer(kind: str, settings: dict[str, Any], **runtime: Any) -> TokenEmbeddings:
    """One embedding; ``runtime`` (device, max_batch_tokens, ...) is passed where the class takes it."""
    if kind not in _CLASSES:
        raise ValueError(f"unknown stack layer kind {kind!r}; known: {', '.join(_CLASSES)}")
    module, name = _CLASSES[kind]
    cls = getattr(importlib.import_module(module), name)
    accepted = inspect.signature(cls).parameters
    extra = {key: value for key, value in runtime.items() if key in accepted and value is not None}
    return cls(**{**settings, **extra})


def build_stack(config: Any, **runtime: Any) -> StackedEmbeddings:
    """A StackedEmbeddings from a JobConfig, its ``stack`` list, or plain dicts.

    ``runtime`` options (``device``, ``max_batch_tokens``, ``precision``) do not change outputs
    beyond tolerance and are not part of the fingerprint.
    """
    spec = _spec_of(config)
    layers = []
    for layer in spec:
        ((kind, settings),) = layer.items()
        layers.append(build_layer(kind, dict(settings), **runtime))
    return StackedEmbeddings(layers, spec=spec)
