"""The config reference, generated from the pydantic models so that it cannot drift from them.

``corpus-embed config`` prints every field (dotted path, type, default, meaning), ``--json-schema``
the JSON Schema editors and validators take, ``--example`` a commented YAML config with every
field at its default. All three read ``pipeline.config.JobConfig`` and the stack specs of
``actors.stack.specs.SPECS``: a new field (or stack kind) shows up here the moment it exists, and
its ``description`` is its documentation. Torch-free, like the config itself.
"""
from __future__ import annotations

import json
import types
import typing
from dataclasses import dataclass
from typing import Any, Iterator, Literal

import yaml
from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from actors.stack.specs import SPECS, StackSpec, default_stack
from pipeline.config import JobConfig

# The path under which each stack kind's fields are listed: ``stack[].transformer.layers``.
STACK_ITEM = "stack[]"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


@dataclass(frozen=True)
class FieldDoc:
    """One config field as the reference lists it."""

    path: str             # dotted: input.path, stack[].transformer.layers
    type: str             # as written in YAML: "auto | jsonl | parquet | text", "int > 0", "str | null"
    default: Any          # the default value (config form); meaningless when required
    required: bool
    description: str

    @property
    def default_text(self) -> str:
        return "required" if self.required else yaml_value(self.default)

    @property
    def key(self) -> str:
        """The last component, as the YAML file spells it."""
        return self.path.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class Section:
    """A group of fields: a nested model (``input``), the top level, or one stack kind."""

    path: str             # "" for the top level, "input", "stack[].transformer"
    title: str
    fields: tuple[FieldDoc, ...]
    spec: type[StackSpec] | None = None


def yaml_value(value: Any) -> str:
    """``value`` as one would write it in a YAML config (``null``, ``true``, ``'-1'``, ``[1, 4]``)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def _constraint(metadata: list[Any]) -> str:
    """Numeric bounds of a field (``> 0``, ``0 to 1``) from pydantic's annotated-types metadata."""
    bounds = {type(item): item for item in metadata if isinstance(item, (Gt, Ge, Lt, Le))}
    low = f"{bounds[Ge].ge}" if Ge in bounds else None
    high = f"{bounds[Le].le}" if Le in bounds else None
    if low is not None and high is not None:
        return f" {low} to {high}"
    parts = []
    if Gt in bounds:
        parts.append(f"> {bounds[Gt].gt}")
    if low is not None:
        parts.append(f">= {low}")
    if Lt in bounds:
        parts.append(f"< {bounds[Lt].lt}")
    if high is not None:
        parts.append(f"<= {high}")
    return (" " + ", ".join(parts)) if parts else ""


def type_name(annotation: Any) -> str:
    """A type as a config author reads it: literals as their choices, None as ``null``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin is Literal:
        return " | ".join(str(arg) for arg in args)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(arg) for arg in args)
    if origin in (list, tuple):
        return f"list[{', '.join(type_name(arg) for arg in args)}]" if args else "list"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation)


def _field_doc(path: str, info: FieldInfo) -> FieldDoc:
    default = None if info.is_required() else info.get_default(call_default_factory=True)
    return FieldDoc(path=path, type=type_name(info.annotation) + _constraint(info.metadata), default=default,
                    required=info.is_required(), description=info.description or "")


def _is_section(info: FieldInfo) -> bool:
    return isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)


def _first_line(text: str | None) -> str:
    """A docstring's first paragraph on one line, without reStructuredText's literal quotes."""
    return " ".join((text or "").strip().split("\n\n")[0].replace("``", "").split())


def stack_default() -> list[dict[str, Any]]:
    """The default stack in config form, without unset (null) settings."""
    return [{spec.kind: spec.model_dump(exclude_none=True)} for spec in default_stack()]


def sections() -> list[Section]:
    """Every field of a job config, grouped: top-level scalars, each nested model, each stack kind."""
    top: list[FieldDoc] = []
    nested: list[Section] = []
    for name, info in JobConfig.model_fields.items():
        if _is_section(info):
            model = info.annotation
            fields = tuple(_field_doc(f"{name}.{key}", sub) for key, sub in model.model_fields.items())
            nested.append(Section(name, info.description or _first_line(model.__doc__), fields))
        elif name == "stack":
            top.append(FieldDoc(path="stack", type="list of {kind: settings}", default=stack_default(), required=False,
                                description=info.description or ""))
        else:
            top.append(_field_doc(name, info))
    kinds = []
    for spec in SPECS:
        title = _first_line(spec.__doc__)
        if spec.document_level:
            title += " Document-level: the only entry of its stack."
        fields = tuple(_field_doc(f"{STACK_ITEM}.{spec.kind}.{key}", info) for key, info in spec.model_fields.items())
        kinds.append(Section(f"{STACK_ITEM}.{spec.kind}", title, fields, spec))
    by_name = {section.path: section for section in nested}
    ordered = [by_name[name] for name in ("input", "output") if name in by_name]
    rest = [section for section in nested if section.path not in ("input", "output")]
    return [*ordered, Section("", "the embedding and the run", tuple(top)), *rest, *kinds]


def field_docs() -> list[FieldDoc]:
    """Every field, in reference order."""
    return [field for section in sections() for field in section.fields]


# -- corpus-embed config ------------------------------------------------------------------------

def reference() -> str:
    """The plain-text reference: one line per field (path, type, default, meaning), by section."""
    docs = field_docs()
    path_width = max(len(field.path) for field in docs)
    type_width = min(max(len(field.type) for field in docs), 30)
    default_width = min(max(len(field.default_text) for field in docs), 14)
    lines = [
        "corpus-embed job config (YAML or JSON): every field, its type, default and meaning.",
        "Override any field with --set path=value; `corpus-embed config --example` prints a commented",
        "config, `--json-schema` its JSON Schema. Unknown keys are errors.",
    ]
    for section in sections():
        lines.append("")
        lines.append(f"{section.path or '(top level)'}: {section.title}")
        for field in section.fields:
            lines.append(f"  {field.path:<{path_width}}  {field.type:<{type_width}}  "
                         f"{field.default_text:<{default_width}}  {field.description}".rstrip())
    lines.append("")
    lines.append(f"{STACK_ITEM}: each stack entry is one mapping {{kind: settings}}, e.g. "
                 f"`- transformer: {{layers: \"-1,-2\"}}`; kinds: {', '.join(spec.kind for spec in SPECS)}.")
    lines.append("--set names an entry by its position: --set stack.0.transformer.layers=-1,-2")
    return "\n".join(lines)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a config file (what ``JobConfig`` accepts, bar cross-field checks)."""
    return {"$schema": JSON_SCHEMA_DIALECT, **JobConfig.model_json_schema()}


def json_schema_text() -> str:
    return json.dumps(json_schema(), indent=2)


# -- corpus-embed config --example ---------------------------------------------------------------

COMMENT_COLUMN = 36


def _commented(line: str, comment: str) -> str:
    return f"{line:<{COMMENT_COLUMN - 1}} # {comment}" if comment else line


def _field_lines(field: FieldDoc, indent: str) -> list[str]:
    value = "null" if field.required else yaml_value(field.default)
    meaning = f"{field.type}; {field.description}" if field.description else field.type
    return [_commented(f"{indent}{field.key}: {value}", ("REQUIRED; " if field.required else "") + meaning)]


def _kind_lines(section: Section, indent: str) -> Iterator[str]:
    assert section.spec is not None
    yield _commented(f"{indent}- {section.spec.kind}:", section.title)
    for field in section.fields:
        yield from _field_lines(field, indent + "    ")


def example() -> str:
    """A commented YAML config: every field at its default, one comment each.

    It parses back to the defaults once ``input.path`` and ``output.path`` are filled in. The
    stack holds the default kind; every other kind follows as a commented-out entry to copy.
    """
    lines = [
        "# corpus-embed job config: every field at its default, with its type and meaning.",
        "# Fill in input.path and output.path; delete what you do not change.",
        "# Reference: `corpus-embed config`; JSON Schema: `corpus-embed config --json-schema`.",
    ]
    default_kinds = [next(iter(item)) for item in stack_default()]
    kind_sections = [section for section in sections() if section.spec is not None]
    for section in sections():
        if section.spec is not None:
            continue
        if section.path:
            lines.append(_commented(f"{section.path}:", section.title))
            lines.extend(line for field in section.fields for line in _field_lines(field, "  "))
            continue
        for field in section.fields:
            if field.path != "stack":
                lines.extend(_field_lines(field, ""))
                continue
            lines.append(_commented("stack:", field.description))
            for kind in default_kinds:
                lines.extend(_kind_lines(next(s for s in kind_sections if s.spec.kind == kind), "  "))
            lines.append("  # Other kinds (token-level kinds stack, in order; a document-level kind stands alone):")
            for other in kind_sections:
                if other.spec.kind not in default_kinds:
                    lines.extend("  # " + line[2:] for line in _kind_lines(other, "  "))
    return "\n".join(lines) + "\n"
