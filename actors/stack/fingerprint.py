"""The stack fingerprint: a stable hash of the stack's config and the bytes of its model files.

Outputs record it, and a run refuses to add vectors from another stack to an output. Torch-free,
so the driver can compute it while planning, from the same config the actors build from.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from actors.stack import registry

_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def file_digest(path: str) -> str:
    """sha256 of a file's bytes, memoised by (path, size, mtime) within the process."""
    stat = os.stat(path)
    key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        _FILE_HASHES[key] = digest.hexdigest()
    return _FILE_HASHES[key]


def files_fingerprint(config: Any, files: list[str] | list[list[str]]) -> str:
    """Hash of a JSON-able config plus the content (not the location) of each file.

    ``files`` may be grouped per model: inside a group of several files (a model folder) each
    file's path relative to the group matters; a single-file model is identified by bytes alone,
    so the same file copied or renamed elsewhere is the same stack.
    """
    groups = [group if isinstance(group, list) else [group] for group in files]
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for group in groups:
        base = os.path.commonpath(group) if len(group) > 1 else None
        for path in group:
            if base is not None:
                digest.update(os.path.relpath(path, base).encode())
            digest.update(file_digest(path).encode())
    return digest.hexdigest()[:32]


def layer_files(kind: str, settings: dict[str, Any]) -> list[str]:
    """The local model files one stack layer reads, resolved through the registry."""
    if kind == "transformer":
        resolved = registry.resolve_transformer(settings.get("model", "default")).path
        return registry.model_file_list(resolved)
    if kind == "flair":
        return [registry.resolve_file("flair", settings["model"], registry.FLAIR_MODELS).path]
    if kind == "elmo":
        if settings.get("options_file") and settings.get("weight_file"):
            return [registry.resolve_file("elmo", settings["options_file"]).path,
                    registry.resolve_file("elmo", settings["weight_file"]).path]
        model = os.path.expanduser(settings.get("model", "original"))
        if os.path.isdir(model):
            return registry.model_file_list(model)
        options_url, weights_url = registry.ELMO_MODELS.get(model, (model, model))
        return [registry.resolve_file("elmo", options_url).path, registry.resolve_file("elmo", weights_url).path]
    if kind == "word":
        table = getattr(registry, "WORD_MODELS", {})
        return [registry.resolve_file("word", settings["embeddings"], table).path]
    raise ValueError(f"unknown stack layer kind {kind!r}")


def _portable(kind: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Settings without file locations: the same model read from another path is the same stack."""
    location_keys = {"model", "options_file", "weight_file", "embeddings"}
    return {key: value for key, value in settings.items() if key not in location_keys}


def stack_fingerprint(spec: list[dict[str, Any]], pooling: str | None = None) -> str:
    """Fingerprint of a stack spec (``[{"transformer": {...}}, ...]``) and its pooling."""
    config = []
    files: list[list[str]] = []
    for layer in spec:
        ((kind, settings),) = layer.items()
        found = layer_files(kind, settings)
        # A hub model with no local files is identified by its name instead of its bytes.
        config.append({kind: _portable(kind, settings) if found else settings})
        if found:
            files.append(found)
    return files_fingerprint({"stack": config, "pooling": pooling}, files)
