"""Deterministic units of work: a whole shard, or a range of a large Parquet shard's row groups.

A unit's key is derived from the shard key (and range) alone, so the same input plans to the same
units on any machine and in any run; each unit's output and ledger record live under that key.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from pipeline.config import InputConfig, StorageConfig
from pipeline.sources import Shard
from pipeline.storage import filesystem, safe_name


@dataclass(frozen=True)
class Unit:
    key: str
    shard: Shard
    row_groups: tuple[int, ...] | None = None   # Parquet only; None = the whole shard

    @property
    def source_fingerprint(self) -> str:
        """Changes when the shard changes; units of one shard share it."""
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
    import pyarrow.parquet as pq

    fs, path = filesystem(shard.url, storage)
    try:
        with fs.open(path, "rb") as handle:
            metadata = pq.ParquetFile(handle).metadata
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
