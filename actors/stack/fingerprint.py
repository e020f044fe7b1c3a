"""The stack fingerprint: a stable hash of the stack's identity and the bytes of its model files.

Outputs record it, and a run refuses to add vectors from another stack to an output. Torch-free,
so the driver computes it while planning, from the same specs the actors build from: each spec
says its identity (settings without file locations) and its files (all of them, companions too).
Runtime options (device, precision, batch budgets) are not part of it.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Sequence

from actors.stack.specs import StackSpec

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


def files_fingerprint(config: Any, files: Sequence[Sequence[str]]) -> str:
    """Hash of a JSON-able config plus the content (not the location) of each group of files.

    Inside a group of several files (a model folder) each file's path relative to the group
    matters; a single-file model is identified by its bytes alone, so the same file copied or
    renamed elsewhere is the same stack.
    """
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for group in files:
        base = os.path.commonpath(group) if len(group) > 1 else None
        for path in group:
            if base is not None:
                digest.update(os.path.relpath(path, base).encode())
            digest.update(file_digest(path).encode())
    return digest.hexdigest()[:32]


def stack_fingerprint(specs: Sequence[StackSpec], pooling: str | None = None) -> str:
    """Fingerprint of a stack (its specs, in order) and its pooling.

    Raises ``registry.ModelNotFoundError`` when a spec's files cannot be found.
    """
    identity = [spec.identity() for spec in specs]
    return files_fingerprint({"stack": identity, "pooling": pooling}, [spec.files() for spec in specs])
