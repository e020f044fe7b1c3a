"""``transformer``: flair's ``TransformerWordEmbeddings`` (one vector per word from a BERT-family encoder)."""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from actors.stack import registry
from actors.stack.specs.base import StackSpec


def check_layers(value: str) -> str:
    """``"all"`` or a comma list of integers (``"-1,-2,-3,-4"``); spaces are dropped."""
    if value.strip() == "all":
        return "all"
    try:
        [int(part) for part in value.split(",")]
    except ValueError:
        raise ValueError('layers must be "all" or a comma list of integers such as "-1,-2,-3,-4"') from None
    return value.replace(" ", "")


class TransformerSpec(StackSpec):
    """Word vectors from a transformer encoder, with flair's arguments and semantics."""

    kind: ClassVar[str] = "transformer"
    builds: ClassVar[str] = "actors.stack.transformer:TransformerWordEmbeddings"

    model: str = Field("default", description="local folder, s3:// or gs:// folder, hub name, or 'default' (the packaged all-MiniLM-L6-v2)")
    layers: str = Field("-1", description='"all" or a comma list of hidden_states indexes ("-1,-2,-3,-4"); 0 is the embedding output')
    layer_mean: bool = Field(True, description="average the chosen layers (false: concatenate them in the listed order)")
    subtoken_pooling: Literal["first", "last", "first_last", "mean"] = Field(
        "first", description="how a word's WordPieces become its vector (first_last doubles the width)")
    layer_combine: Literal["mean", "sum", "concat", "scalar_mix"] | None = Field(
        None, description="names the layer combination outright; overrides layer_mean and use_scalar_mix")
    use_scalar_mix: bool = Field(False, description="mix the layers with a scalar mix (gamma * sum softmax(w)_k h_k)")
    scalar_mix_weights: list[float] | None = Field(None, description="the scalar mix's (trained) weights, one per layer; uniform if unset")
    scalar_mix_gamma: float = Field(1.0, description="the scalar mix's gamma")
    scalar_mix_layer_norm: bool = Field(False, description="layer-normalise each layer before the scalar mix")
    allow_long_sentences: bool = Field(True, description="sentences past the model's window run as overlapping windows (false: words past it get zeros)")

    @field_validator("layers")
    @classmethod
    def _layers_syntax(cls, value: str) -> str:
        return check_layers(value)

    @model_validator(mode="after")
    def _mix_weights_fit(self) -> "TransformerSpec":
        if self.scalar_mix_weights is not None and self.layers != "all":
            if len(self.scalar_mix_weights) != len(self.layers.split(",")):
                raise ValueError(f"scalar_mix_weights has {len(self.scalar_mix_weights)} weights for "
                                 f"{len(self.layers.split(','))} layers ({self.layers!r})")
        return self

    def files(self) -> list[str]:
        return registry.transformer_files(self.model)
