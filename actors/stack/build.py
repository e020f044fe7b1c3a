"""Build a stack from specs: each spec builds its own module (``spec.build()``), in list order."""
from __future__ import annotations

from typing import Any, Sequence

from actors.stack.specs import Runtime, StackSpec, parse_stack
from actors.stack.stacked import StackedEmbeddings


def build_stack(stack: Sequence[StackSpec | dict[str, Any]] | StackSpec, runtime: Runtime | None = None,
                **options: Any) -> Any:
    """A ``StackedEmbeddings`` of token embeddings, or the one document-level embedding.

    ``stack`` is a list of specs or config-form entries (``[{"transformer": {...}}, ...]``).
    ``runtime`` (or its fields as keyword arguments: ``device``, ``precision``,
    ``max_batch_tokens``, ``fine_tune``) changes speed and memory, never the fingerprint.
    A document-level kind (``sentence_transformer``, ``transformer_document``) embeds whole texts
    and cannot be stacked with anything else.
    """
    specs = parse_stack(stack)
    runtime = runtime or Runtime(**{key: value for key, value in options.items() if value is not None})
    if any(spec.document_level for spec in specs):
        if len(specs) != 1:
            kinds = [spec.kind for spec in specs]
            raise ValueError(f"a document-level embedding embeds whole texts and is a stack of its own; got {kinds}")
        return specs[0].build(runtime)
    return StackedEmbeddings([spec.build(runtime) for spec in specs])
