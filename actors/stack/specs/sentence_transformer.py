"""``sentence_transformer``: exactly ``SentenceTransformer(model).encode(text, prompt=...)``, batched our way."""
from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from actors.stack import registry
from actors.stack.specs.base import StackSpec


class SentenceTransformerSpec(StackSpec):
    """The model's own modules (Transformer, Pooling, Dense, Normalize) as its modules.json lists them."""

    kind: ClassVar[str] = "sentence_transformer"
    builds: ClassVar[str] = "actors.stack.sentence_transformer:SentenceTransformerEmbeddings"
    document_level: ClassVar[bool] = True

    model: str = Field("default", description="a sentence-transformers model folder, s3:// or gs:// folder, hub name, or 'default' (the packaged all-MiniLM-L6-v2)")
    prompt: str | None = Field(None, description="text put before every document, as encode(prompt=...)")
    prompt_name: str | None = Field(None, description="a prompt the model declares (e5/bge: 'query', 'passage', 'document')")

    @model_validator(mode="after")
    def _one_prompt(self) -> "SentenceTransformerSpec":
        if self.prompt is not None and self.prompt_name is not None:
            raise ValueError("give prompt or prompt_name, not both")
        return self

    def files(self) -> list[str]:
        """The files that decide the vectors: modules.json, each module's folder, tokenizer and
        safetensors weights; not ONNX/OpenVINO exports, model cards or pickled weights."""
        from actors.stack.st_files import sentence_transformer_files

        return sentence_transformer_files(registry.resolve_transformer(self.model).path)
