"""The base of every stack spec: a torch-free pydantic model that alone defines one stack kind.

A spec holds a kind's settings (fields, defaults, validation), knows the model files that define
its output (``files()``: all of them, companions included, resolved through the registry), says
which of its settings are identity (``identity()``: everything but file locations, because the
files' bytes stand for them), and builds the ``nn.Module`` (``build()``, importing torch only then).

One dict describes a layer everywhere, as in sentence-transformers' modules: ``get_config_dict()``
is what the config file says, what builds the module, what the manifest records and what the
fingerprint hashes. Adding a stack kind means one spec module here and one module beside
``actors/stack/base.py``, plus its name in ``specs/__init__.py``.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


@dataclass(frozen=True)
class Runtime:
    """Settings that change speed and memory, never the vectors (beyond autocast tolerance).

    They are not part of a spec's identity, so changing them never re-embeds anything.
    ``precision`` is recorded per unit all the same (see ``pipeline.ledger.CommitRecord``).
    """

    device: str | None = None
    precision: str = "auto"
    max_batch_tokens: int | None = None
    fine_tune: bool = False

    def kwargs(self) -> dict[str, Any]:
        return {"device": self.device, "precision": self.precision,
                "max_batch_tokens": self.max_batch_tokens, "fine_tune": self.fine_tune}


class StackSpec(BaseModel):
    """One stack entry's settings. Unknown keys are errors: a typo must never fall back to a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: ClassVar[str]
    # "module:Class" of the nn.Module this spec builds; imported lazily by ``build``.
    builds: ClassVar[str]
    # Fields that only say where files are: left out of the identity, since the files' bytes count.
    location_fields: ClassVar[tuple[str, ...]] = ("model",)
    # Whole texts in, one vector out (sentence-transformers, flair's TransformerDocumentEmbeddings),
    # rather than one vector per token.
    document_level: ClassVar[bool] = False

    def files(self) -> list[str]:
        """Every local file whose bytes define this layer's output, resolved through the registry.

        Raises ``registry.ModelNotFoundError`` (naming every place looked at) when a file is missing,
        so a run can refuse before any work.
        """
        raise NotImplementedError

    def identity(self) -> dict[str, Any]:
        """The settings that define the output, without file locations (the bytes stand for them)."""
        return {"kind": self.kind, **self.model_dump(exclude=set(self.location_fields))}

    def get_config_dict(self) -> dict[str, Any]:
        """The config-file form, ``{kind: settings}``: what builds, is recorded and is fingerprinted."""
        return {self.kind: self.model_dump()}

    def build(self, runtime: Runtime | None = None) -> Any:
        """The ``nn.Module`` for this spec (imports torch and the module only now)."""
        module_name, class_name = self.builds.split(":")
        module_class = getattr(importlib.import_module(module_name), class_name)
        return module_class.from_spec(self, runtime or Runtime())

    def describe(self) -> str:
        """A short human description, e.g. for Parquet metadata and the run summary."""
        settings = ", ".join(f"{key}={value}" for key, value in self.model_dump().items() if value is not None)
        return f"{self.kind}({settings})"
