"""The progress ledger: one small JSON record per committed unit, plus the output's manifest.

Layout under the output (folders starting with ``_`` are invisible to Parquet readers)::

    _manifest.json                      stack fingerprint, dim, dtype, granularity
    _ledger/<unit-key>/<source-fp>.json one record per committed unit

The source fingerprint is part of the record's *name*, so planning needs only one recursive
listing, never a read per unit, and never anything per row: a million shards plan from a listing.
A unit whose shard changed has a record under another fingerprint and is simply not committed.
"""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import fsspec

from pipeline.layout import LEDGER_DIR, MANIFEST, TEMP_DIR
from pipeline.storage import join, write_bytes_atomic


class OutputMismatchError(RuntimeError):
    """The output holds vectors from another stack (or dtype/granularity) than this run's."""


@dataclass(frozen=True)
class Committed:
    unit_key: str
    source_fingerprint: str
    path: str


class Ledger:
    """Commit records of one output; every method is safe to call again after a crash."""

    def __init__(self, fs: fsspec.AbstractFileSystem, output_root: str):
        self.fs = fs
        self.root = output_root
        self.dir = join(output_root, LEDGER_DIR)
        self.temp_dir = join(output_root, TEMP_DIR)

    def write_json(self, relative: str, data: dict[str, Any], indent: int | None = None) -> None:
        """Write a JSON file at ``relative`` under the output atomically."""
        self._write_json_at(join(self.root, relative), data, indent)

    def _write_json_at(self, path: str, data: dict[str, Any], indent: int | None = None) -> None:
        """Write a JSON file at ``path`` atomically (temp files live under ``_staging/``)."""
        payload = json.dumps(data, sort_keys=True, indent=indent).encode()
        write_bytes_atomic(self.fs, path, payload, temp_dir=self.temp_dir)

    def record_path(self, unit_key: str, source_fingerprint: str) -> str:
        return join(self.dir, unit_key, f"{source_fingerprint}.json")

    def committed(self) -> dict[str, Committed]:
        """unit key → its committed record, from one recursive listing."""
        try:
            names = self.fs.find(self.dir)
        except FileNotFoundError:
            return {}
        found: dict[str, Committed] = {}
        for name in names:
            parts = name.rstrip("/").split("/")
            if len(parts) < 2 or not parts[-1].endswith(".json") or parts[-1].startswith("."):
                continue
            unit_key, fingerprint = parts[-2], parts[-1][: -len(".json")]
            found[unit_key] = Committed(unit_key, fingerprint, name)
        return found

    def commit(self, unit_key: str, source_fingerprint: str, record: dict[str, Any]) -> None:
        """Write the unit's record, then drop its records under older fingerprints."""
        record = {**record, "unit": unit_key, "source_fingerprint": source_fingerprint, "committed_at": time.time()}
        path = self.record_path(unit_key, source_fingerprint)
        self._write_json_at(path, record)
        for stale in self._records_of(unit_key):
            if stale != path:
                self.fs.rm(stale)

    def forget(self, unit_key: str) -> None:
        """Remove every record of a unit (its shard was deleted)."""
        for path in self._records_of(unit_key):
            self.fs.rm(path)

    def _records_of(self, unit_key: str) -> list[str]:
        try:
            return [p for p in self.fs.ls(join(self.dir, unit_key), detail=False) if p.endswith(".json")]
        except FileNotFoundError:
            return []

    def read_records(self, committed: dict[str, Committed] | None = None) -> list[dict[str, Any]]:
        """The content of every committed record (read in parallel; for status, not for planning)."""
        committed = self.committed() if committed is None else committed
        paths = [entry.path for entry in committed.values()]

        def read(path: str) -> dict[str, Any]:
            with self.fs.open(path, "rb") as handle:
                return json.loads(handle.read())

        with ThreadPoolExecutor(max_workers=16) as pool:
            return list(pool.map(read, paths))

    # -- the output's identity -------------------------------------------------------------
    def manifest(self) -> dict[str, Any] | None:
        path = join(self.root, MANIFEST)
        try:
            with self.fs.open(path, "rb") as handle:
                return json.loads(handle.read())
        except FileNotFoundError:
            return None

    def claim(self, manifest: dict[str, Any]) -> None:
        """Bind the output to this stack, or refuse if it already holds another stack's vectors."""
        existing = self.manifest()
        identity = ("stack_fingerprint", "dtype", "granularity")  # dim follows from the stack
        if existing is not None:
            differs = [key for key in identity if existing.get(key) != manifest.get(key)]
            if differs:
                detail = ", ".join(f"{key}: output has {existing.get(key)!r}, this run {manifest.get(key)!r}" for key in differs)
                raise OutputMismatchError(
                    f"output {self.root!r} holds vectors from another stack or layout ({detail}). "
                    f"Use a new output.path, or pass --overwrite to delete the existing output first."
                )
            return
        self.write_json(MANIFEST, manifest, indent=1)
