"""``transformer_document``: flair's ``TransformerDocumentEmbeddings`` (one vector per whole text)."""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from actors.stack import registry
from actors.stack.specs.base import StackSpec
from actors.stack.specs.transformer import check_layers


class TransformerDocumentSpec(StackSpec):
    """A document vector from a transformer, as flair 0.15.1's TransformerDocumentEmbeddings on Sentence(text)."""

    kind: ClassVar[str] = "transformer_document"
    builds: ClassVar[str] = "actors.stack.transformer_document:TransformerDocumentEmbeddings"
    document_level: ClassVar[bool] = True

    model: str = Field("default", description="local folder, s3:// or gs:// folder, hub name, or 'default' (the packaged all-MiniLM-L6-v2)")
    layers: str = Field("-1", description='"all" or a comma list of hidden_states indexes')
    layer_mean: bool = Field(False, description="average the chosen layers (false, flair's default: concatenate them)")
    cls_pooling: Literal["cls", "mean", "max"] = Field("cls", description="the [CLS] state, or the mean / max over the subtokens")

    @field_validator("layers")
    @classmethod
    def _layers_syntax(cls, value: str) -> str:
        return check_layers(value)

    def files(self) -> list[str]:
        return registry.transformer_files(self.model)
