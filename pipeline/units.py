"""Deterministic units of work, and what makes a committed unit count as done (its identity).

A unit is a whole shard, or a range of a large Parquet shard's row groups. Its key is derived from
the shard key (and range) alone, so the same input plans to the same units on any machine and in
any run; each unit's output and ledger record live under that key.

A committed unit counts as done only if both halves of its identity still hold:

- ``source``: the shard's version (size + ETag, or size + mtime + ctime locally; see
  ``pipeline.sources``) and the unit's span of it;
- ``settings``: every setting that shapes the unit's rows (``row_settings``): input format, text
  and id fields, id type, max_chars, rows_per_unit, the text front-end's version, granularity,
  dtype, keep_text, and the stack's fingerprint with its pooling.

Both are short hashes in the ledger record's *name*, so planning needs one listing, never a read
per unit, and can still say whether a unit is replaced because its shard or the settings changed.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from pipeline.config import InputConfig, JobConfig, StorageConfig
from pipeline.sources import Shard
from pipeline.storage import filesystem, parquet_file, safe_name


@dataclass(frozen=True)
class Unit:
    key: str
    shard: Shard
    row_groups: tuple[int, ...] | None = None   # Parquet only; None = the whole shard

    @property
    def source_fingerprint(self) -> str:
        """Changes when the shard's content or this unit's span of it changes."""
        span = ",".join(map(str, self.row_groups)) if self.row_groups else "all"
        return hashlib.sha1(f"{self.shard.fingerprint}:{span}".encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "shard": self.shard.to_dict(), "row_groups": list(self.row_groups) if self.row_groups else None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Unit":
        groups = data.get("row_groups")
        return cls(key=data["key"], shard=Shard(**data["shard"]), row_groups=tuple(groups) if groups else None)


def shard_units(shard: Shard, config: InputConfig, storage: StorageConfig | None = None) -> list[Unit]:
    """The units of one shard: Parquet row groups grouped to about ``rows_per_unit`` rows; else the shard."""
    base = safe_name(shard.key)
    if shard.format != "parquet" or shard.compression:
        return [Unit(base, shard)]
    fs, path = filesystem(shard.url, storage)
    try:
        with fs.open(path, "rb") as handle:
            metadata = parquet_file(handle).metadata
    except Exception:  # noqa: BLE001 - an unreadable footer is reported by the reader as a reject
        return [Unit(base, shard)]
    if metadata.num_rows <= config.rows_per_unit or metadata.num_row_groups <= 1:
        return [Unit(base, shard)]
    units: list[Unit] = []
    group: list[int] = []
    rows = 0
    for index in range(metadata.num_row_groups):
        group.append(index)
        rows += metadata.row_group(index).num_rows
        if rows >= config.rows_per_unit:
            units.append(Unit(f"{base}-rg{group[0]:05d}-{group[-1]:05d}", shard, tuple(group)))
            group, rows = [], 0
    if group:
        units.append(Unit(f"{base}-rg{group[0]:05d}-{group[-1]:05d}", shard, tuple(group)))
    return units


def plan_units(shards: list[Shard], config: InputConfig, storage: StorageConfig | None = None) -> list[Unit]:
    """All units of all shards, in shard-key order."""
    from concurrent.futures import ThreadPoolExecutor

    needs_footer = [shard for shard in shards if shard.format == "parquet" and not shard.compression]
    with ThreadPoolExecutor(max_workers=16) as pool:
        parquet_units = dict(zip(
            (shard.key for shard in needs_footer),
            pool.map(lambda shard: shard_units(shard, config, storage), needs_footer),
        ))
    units: list[Unit] = []
    for shard in shards:
        units.extend(parquet_units.get(shard.key) or shard_units(shard, config, storage))
    return units


def row_settings(config: JobConfig, stack_fingerprint: str) -> dict[str, Any]:
    """Every setting that shapes the rows a unit yields: change one and the unit is embedded again.

    Not here, on purpose: the paths (a unit is named by its shard key and the output by its
    path), resources (speed, never rows; precision is recorded per unit instead), storage.
    """
    from actors.text import FRONTEND_VERSION

    source = config.input
    return {
        "input.format": source.format, "input.text_field": source.text_field, "input.id_field": source.id_field,
        "input.id_type": source.id_type, "input.max_chars": source.max_chars, "input.rows_per_unit": source.rows_per_unit,
        "output.granularity": config.output.granularity, "output.dtype": config.output.dtype,
        "output.keep_text": config.output.keep_text, "frontend": FRONTEND_VERSION,
        "stack": stack_fingerprint, "pooling": config.token_pooling,
    }


def settings_hash(settings: dict[str, Any]) -> str:
    """The short hash of ``row_settings`` that names committed records."""
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
