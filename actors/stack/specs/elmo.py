"""``elmo``: AllenNLP's ELMo, from its published ``options.json`` + ``weights.hdf5`` (no allennlp needed)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from actors.stack import registry
from actors.stack.registry import ModelNotFoundError
from actors.stack.specs.base import StackSpec

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

    Published names (``small``, ``medium``, ``original``, ``pt`` alias ``portuguese``, ``pubmed``)
    resolve through the registry: cache, then the mirror, then AllenNLP's URL.
    """
    options = registry.resolve_file("elmo", options_file).path if options_file else None
    weights = registry.resolve_file("elmo", weight_file).path if weight_file else None
    if options and weights:
        return options, weights
    folder = os.path.expanduser(model)
    if os.path.isdir(folder):
        folder_options, folder_weights = _folder_files(folder)
        return options or folder_options, weights or folder_weights
    name = MODEL_ALIASES.get(model, model)
    try:
        options = options or registry.resolve_file("elmo", name, {k: v[0] for k, v in registry.ELMO_MODELS.items()}).path
        weights = weights or registry.resolve_file("elmo", name, {k: v[1] for k, v in registry.ELMO_MODELS.items()}).path
    except ModelNotFoundError as error:
        raise ModelNotFoundError(
            f"ELMo model {model!r} is neither a folder with {OPTIONS_NAME} + {WEIGHTS_NAME} nor a file "
            f"that could be found. {error}"
        ) from error
    return options, weights


class ElmoSpec(StackSpec):
    """ELMo token vectors: the char-CNN layer and two biLSTM layers."""

    kind: ClassVar[str] = "elmo"
    builds: ClassVar[str] = "actors.stack.elmo:ELMoEmbeddings"
    location_fields: ClassVar[tuple[str, ...]] = ("model", "options_file", "weight_file")

    model: str = Field("original", description="small, medium, original, pt (portuguese), pubmed, or a folder with options.json + weights.hdf5")
    options_file: str | None = Field(None, description="an options.json path or URL (overrides model's)")
    weight_file: str | None = Field(None, description="a weights.hdf5 path or URL (overrides model's)")
    embedding_mode: Literal["all", "top", "average"] = Field("all", description="all: the 3 layers concatenated; top: the last; average: their mean")

    def files(self) -> list[str]:
        return list(resolve_elmo_files(self.model, self.options_file, self.weight_file))
