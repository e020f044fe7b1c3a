"""The index's metadata (``index.json``) and where its files live.

``index.json`` is written last and atomically by every build: it is the commit point. It names the
FAISS file of its generation and the id-map file of every indexed unit, so a build that crashes
midway leaves the previous index fully readable; the next build sweeps the unreferenced files.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import fsspec

from pipeline.index.errors import IndexNotFoundError
from pipeline.storage import join, write_bytes_atomic

META = "index.json"
IDMAP_DIR = "idmap"
FORMAT_VERSION = 1
KINDS = ("flat", "hnsw", "ivfpq")


@dataclass
class UnitEntry:
    """One indexed unit: the ledger state it was read at and the label range its vectors hold."""

    source_fingerprint: str
    first_label: int
    count: int
    run_id: str | None = None
    committed_at: float | None = None

    @property
    def labels(self) -> tuple[int, int]:
        """Half-open label range ``[first, end)``."""
        return self.first_label, self.first_label + self.count


@dataclass
class IndexMeta:
    kind: str
    dim: int
    stack_fingerprint: str
    stack: list[dict[str, Any]]
    pooling: str
    granularity: str
    dtype: str
    output: str
    params: dict[str, Any]
    metric: str = "cosine"
    count: int = 0                                   # live vectors (tombstoned ones excluded)
    next_label: int = 0                              # labels are never reused, so stale ranges never collide
    generation: int = 0
    index_file: str = ""
    units: dict[str, UnitEntry] = field(default_factory=dict)
    removed: list[list[int]] = field(default_factory=list)   # tombstoned [start, end) label ranges (hnsw)
    built_at: float | None = None
    format_version: int = FORMAT_VERSION

    @property
    def tombstoned(self) -> int:
        return sum(end - start for start, end in self.removed)

    def to_json(self) -> bytes:
        data = asdict(self)
        return json.dumps(data, indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> "IndexMeta":
        data = json.loads(raw)
        version = data.get("format_version", 0)
        if version > FORMAT_VERSION:
            raise ValueError(f"index format {version} is newer than this corpus-embed understands ({FORMAT_VERSION}); upgrade corpus-embed")
        data["units"] = {key: UnitEntry(**entry) for key, entry in data.get("units", {}).items()}
        return cls(**data)

    def idmap_path(self, root: str, unit_key: str) -> str:
        return idmap_path(root, unit_key, self.units[unit_key].first_label)


def idmap_path(root: str, unit_key: str, first_label: int) -> str:
    return join(root, IDMAP_DIR, unit_key, f"{first_label:012d}.parquet")


def index_file_name(generation: int) -> str:
    return f"index-{generation:06d}.faiss"


def load_meta(fs: fsspec.AbstractFileSystem, root: str) -> IndexMeta | None:
    """The index's metadata, or None when there is no index at ``root`` yet."""
    try:
        with fs.open(join(root, META), "rb") as handle:
            return IndexMeta.from_json(handle.read())
    except FileNotFoundError:
        return None


def require_meta(fs: fsspec.AbstractFileSystem, root: str, url: str) -> IndexMeta:
    meta = load_meta(fs, root)
    if meta is None:
        raise IndexNotFoundError(f"no index at {url!r} ({META} not found); build one with "
                                 f"`corpus-embed index build OUTPUT {url}`")
    return meta


def save_meta(fs: fsspec.AbstractFileSystem, root: str, meta: IndexMeta) -> None:
    write_bytes_atomic(fs, join(root, META), meta.to_json())
