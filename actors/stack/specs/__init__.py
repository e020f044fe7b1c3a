"""Stack specs: one torch-free pydantic model per stack kind, and the config entry that names one.

A config's ``stack:`` is a list of one-key mappings, ``- transformer: {...}``; ``StackEntry`` is
their discriminated union (the key picks the spec), so errors name the kind and the field, and
the JSON Schema matches what people write. ``SPECS`` is the one list of kinds.
"""
from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Tag, TypeAdapter, ValidationError, create_model

from actors.stack.specs.base import Runtime, StackSpec
from actors.stack.specs.elmo import ElmoSpec
from actors.stack.specs.flair import FlairSpec
from actors.stack.specs.sentence_transformer import SentenceTransformerSpec
from actors.stack.specs.transformer import TransformerSpec
from actors.stack.specs.transformer_document import TransformerDocumentSpec
from actors.stack.specs.word import WordSpec

SPECS: tuple[type[StackSpec], ...] = (
    TransformerSpec, FlairSpec, ElmoSpec, WordSpec, TransformerDocumentSpec, SentenceTransformerSpec,
)
KINDS: dict[str, type[StackSpec]] = {spec.kind: spec for spec in SPECS}


class _Entry(BaseModel):
    """``{kind: settings}``: one stack entry as the config file writes it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @property
    def spec(self) -> StackSpec:
        (value,) = (getattr(self, name) for name in type(self).model_fields)
        return value


def _entry_model(spec: type[StackSpec]) -> type[_Entry]:
    return create_model(f"{spec.__name__.removesuffix('Spec')}Entry", __base__=_Entry,
                        __doc__=spec.__doc__, **{spec.kind: (spec, ...)})


def _kind_of(value: Any) -> str | None:
    if isinstance(value, _Entry):
        return value.spec.kind
    if isinstance(value, StackSpec):
        return value.kind
    if isinstance(value, dict) and len(value) == 1:
        (key,) = value
        return key if key in KINDS else None
    return None


StackEntry = Annotated[
    Union[tuple(Annotated[_entry_model(spec), Tag(spec.kind)] for spec in SPECS)],  # type: ignore[misc]
    Discriminator(
        _kind_of,
        custom_error_type="stack_entry",
        custom_error_message=f"each stack entry is one mapping {{kind: settings}} with kind one of {', '.join(KINDS)}",
    ),
]

_ENTRIES = TypeAdapter(list[StackEntry])


def entry(spec: StackSpec) -> Any:
    """The config entry (``{kind: spec}``) holding ``spec``."""
    return _ENTRIES.validate_python([{spec.kind: spec}])[0]


def parse_stack(entries: Any) -> list[StackSpec]:
    """Specs from config-form entries (``[{"transformer": {...}}, ...]``), specs or entries.

    Raises ``ValueError`` (pydantic's ``ValidationError``) naming the entry and field at fault.
    """
    if isinstance(entries, (StackSpec, dict)):
        entries = [entries]
    items = [{item.kind: item} if isinstance(item, StackSpec) else item for item in entries]
    return [item.spec for item in _ENTRIES.validate_python(items)]


def default_stack() -> list[StackSpec]:
    """The embedded default: the packaged all-MiniLM-L6-v2 exactly as sentence-transformers encodes
    with it, so default outputs and indexes agree with what search services embed queries with."""
    return [SentenceTransformerSpec(model="default")]


__all__ = ["KINDS", "SPECS", "Runtime", "StackEntry", "StackSpec", "ElmoSpec", "FlairSpec", "SentenceTransformerSpec",
           "TransformerDocumentSpec", "TransformerSpec", "WordSpec", "ValidationError", "default_stack", "entry",
           "parse_stack"]
