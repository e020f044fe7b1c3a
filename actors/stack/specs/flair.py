"""``flair``: flair's contextual string embeddings (a forward or backward character language model)."""
from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from actors.stack import registry
from actors.stack.specs.base import StackSpec


class FlairSpec(StackSpec):
    """One Flair character LM, from flair's own ``.pt`` files (published ids resolve through the registry)."""

    kind: ClassVar[str] = "flair"
    builds: ClassVar[str] = "actors.stack.flair:FlairEmbeddings"
    # chars_per_chunk bounds memory and never changes the vectors.
    location_fields: ClassVar[tuple[str, ...]] = ("model", "chars_per_chunk")

    model: str = Field(description="a .pt path or URL, or a published id such as news-forward, multi-backward-fast, de-forward")
    with_whitespace: bool = Field(True, description="read a word's vector at the whitespace after it (forward LM) / before it (backward LM)")
    tokenized_lm: bool = Field(True, description="the LM reads the tokens joined by single spaces (false: the original text, each token's whitespace_after kept)")
    is_lower: bool = Field(False, description="lowercase the text first (for LMs trained on lowercased text)")
    chars_per_chunk: int = Field(512, gt=0, description="characters per LSTM call: bounds memory, never changes the vectors")

    def files(self) -> list[str]:
        return [registry.resolve_file("flair", self.model, registry.FLAIR_MODELS).path]
