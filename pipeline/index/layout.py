"""The index's metadata (``index.json``) and where its files live.

``index.json`` is written last and atomically by every build (``Folder.write_json``): it is the
commit point. It names the FAISS file of its generation and the id-map file of every indexed unit,
so a build that crashes midway leaves the previous index fully readable; the next build sweeps the
unreferenced files.

Format 2 (this one) keys each indexed unit by the ledger identity it was read at,
``"<source>-<settings>"`` (``UnitEntry.identity``): a unit whose shard *or* row settings changed is
re-read. Format 1 stored the source fingerprint alone (``source_fingerprint``); such an index still
loads, and its units simply no longer match any identity, so the next build replaces them all.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline.index.errors import IndexNotFoundError

if TYPE_CHECKING:   # the CLI's parser imports this module for KINDS: keep it light
    from pipeline.ledger import Committed, CommitRecord
    from pipeline.storage import Folder

META = "index.json"
IDMAP_DIR = "idmap"
FORMAT_VERSION = 2
KINDS = ("flat", "hnsw", "ivfpq")


def unit_identity(entry: Committed | CommitRecord) -> str:
    """A committed unit's identity as the index records it: both halves, source and settings."""
    return f"{entry.source}-{entry.settings}"


@dataclass
class UnitEntry:
    """One indexed unit: the ledger identity it was read at and the label range its vectors hold."""

    identity: str
    first_label: int
    count: int
    run_id: str | None = None
    committed_at: float | None = None

    @property
    def labels(self) -> tuple[int, int]:
        """Half-open label range ``[first, end)``."""
        return self.first_label, self.first_label + self.count

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "UnitEntry":
        data = dict(data)
        if "source_fingerprint" in data:   # format 1: the source half only, never equal to a current identity
            data.setdefault("identity", data.pop("source_fingerprint"))
        return cls(**data)


@dataclass
class IndexMeta:
    kind: str
    dim: int
    stack_fingerprint: str
    stack: list[dict[str, Any]]
    pooling: str | None                              # None for document-level stacks (sentence_transformer, ...)
    granularity: str
    dtype: str
    output: str
    params: dict[str, Any]
    metric: str = "cosine"
    id_type: str | None = None                       # "int" or "string": the type the id map stores ids in
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "IndexMeta":
        data = dict(data)
        version = data.get("format_version", 0)
        if version > FORMAT_VERSION:
            raise ValueError(f"index format {version} is newer than this corpus-embed understands ({FORMAT_VERSION}); "
                             f"upgrade corpus-embed")
        data["units"] = {key: UnitEntry.from_dict(entry) for key, entry in data.get("units", {}).items()}
        data["format_version"] = FORMAT_VERSION   # the next save writes the current format
        return cls(**data)

    def idmap_path(self, unit_key: str) -> str:
        """The unit's id-map file, relative to the index folder."""
        return idmap_path(unit_key, self.units[unit_key].first_label)


def idmap_path(unit_key: str, first_label: int) -> str:
    return f"{IDMAP_DIR}/{unit_key}/{first_label:012d}.parquet"


def index_file_name(generation: int) -> str:
    return f"index-{generation:06d}.faiss"


def load_meta(folder: Folder) -> IndexMeta | None:
    """The index's metadata, or None when there is no index in ``folder`` yet."""
    data = folder.read_json(META)
    return None if data is None else IndexMeta.from_dict(data)


def require_meta(folder: Folder) -> IndexMeta:
    meta = load_meta(folder)
    if meta is None:
        raise IndexNotFoundError(f"no index at {folder.url!r} ({META} not found); build one with "
                                 f"`corpus-embed index build OUTPUT {folder.url}`")
    return meta


def save_meta(folder: Folder, meta: IndexMeta) -> None:
    """Commit the index: ``index.json`` replaced atomically (readers see the old or the new, never half)."""
    folder.write_json(META, meta.to_dict(), indent=1)
