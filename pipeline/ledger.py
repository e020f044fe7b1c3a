"""The progress ledger: one small record per committed unit, plus the output's manifest.

Layout under the output (names starting with ``_`` are invisible to Parquet readers)::

    _manifest.json                          the output's identity: stack, dtype, granularity, dim, id type
    _ledger/<unit>@<source>-<settings>.json one ``CommitRecord`` per committed unit
    _ledger.digest.parquet                  every record's content as of the last run (for status)

A record's name carries both halves of the unit's identity (see ``pipeline.units``), so planning
needs one flat listing, never a read per unit, never anything per row: a million units plan from
a listing. A unit whose shard or settings changed has a record under another name and is simply
not committed. ``status`` needs the records' content (rows, rejects, precision): it reads the
digest and only the records committed since, so it stays fast at 100,000 units.
"""
from __future__ import annotations

import io
import json
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import UserError
from pipeline.layout import LEDGER_DIGEST, LEDGER_DIR, LEDGER_LAYOUT, MANIFEST
from pipeline.storage import Folder


class OutputMismatchError(UserError):
    """The output holds vectors from another stack (or dtype/granularity/layout) than this run's."""


@dataclass(frozen=True)
class Committed:
    """What the listing says of one committed unit: its key and the two halves of its identity."""

    unit: str
    source: str
    settings: str

    @property
    def name(self) -> str:
        return record_name(self.unit, self.source, self.settings)


def record_name(unit: str, source: str, settings: str) -> str:
    return f"{LEDGER_DIR}/{unit}@{source}-{settings}.json"


def parse_record_name(relative: str) -> Committed | None:
    name = relative.rsplit("/", 1)[-1]
    if name.startswith(".") or not name.endswith(".json") or "@" not in name:
        return None
    unit, _, identity = name[: -len(".json")].rpartition("@")
    source, _, settings = identity.partition("-")
    return Committed(unit, source, settings) if unit and source and settings else None


@dataclass
class CommitRecord:
    """One committed unit: where its rows came from, what became of them, and where they are."""

    unit: str
    source: str
    settings: str
    shard: str
    shard_url: str
    size: int
    version: str
    row_groups: list[int] | None
    rows_in: int
    rows_out: int
    rows_rejected: int
    reasons: dict[str, int]
    tokens: int
    dim: int
    id_type: str
    files: list[str]
    stack_fingerprint: str
    precision: str
    run_id: str
    committed_at: float = field(default_factory=time.time)

    @property
    def name(self) -> str:
        return record_name(self.unit, self.source, self.settings)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "CommitRecord":
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


@dataclass
class LedgerTotals:
    """What the committed units add up to (``status``)."""

    rows_in: int = 0
    rows_out: int = 0
    rows_rejected: int = 0
    tokens: int = 0
    reasons: Counter = field(default_factory=Counter)
    precision: Counter = field(default_factory=Counter)

    def add(self, record: CommitRecord) -> None:
        self.rows_in += record.rows_in
        self.rows_out += record.rows_out
        self.rows_rejected += record.rows_rejected
        self.tokens += record.tokens
        self.reasons.update(record.reasons)
        self.precision[record.precision] += 1


@dataclass
class Manifest:
    """The output's identity and the config of its latest run (what ``status`` plans with)."""

    stack_fingerprint: str
    stack: list[dict[str, Any]]
    pooling: str | None
    dtype: str
    granularity: str
    version: str
    layout: int = LEDGER_LAYOUT
    dim: int | None = None
    id_type: str | None = None
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)   # settings hash -> row settings
    config: dict[str, Any] | None = None                                # the latest run's job config

    IDENTITY = ("layout", "stack_fingerprint", "dtype", "granularity")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Manifest":
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        values.setdefault("layout", 1)
        for name in ("stack_fingerprint", "stack", "pooling", "dtype", "granularity", "version"):
            values.setdefault(name, None)
        return cls(**values)

    def mismatch(self, other: "Manifest") -> list[str]:
        """What differs between this output's identity and a run's, as readable phrases."""
        return [f"{key}: the output has {getattr(self, key)!r}, this run {getattr(other, key)!r}"
                for key in self.IDENTITY if getattr(self, key) != getattr(other, key)]


class Ledger:
    """Commit records and the manifest of one output; every method is safe to call again after a crash."""

    def __init__(self, output: Folder):
        self.output = output

    # -- records -----------------------------------------------------------------------------
    def committed(self) -> dict[str, Committed]:
        """unit key → its committed identity, from one flat listing."""
        found: dict[str, Committed] = {}
        for name in self.output.listdir(LEDGER_DIR):
            entry = parse_record_name(name)
            if entry is not None:
                found[entry.unit] = entry
        return found

    def commit(self, record: CommitRecord, previous: Committed | None = None) -> None:
        """Write the unit's record, then drop its record under an older identity."""
        self.output.write_json(record.name, record.to_json())
        if previous is not None and previous.name != record.name:
            self.output.remove(previous.name)

    def forget(self, entry: Committed) -> None:
        """Remove a unit's record (its shard was deleted, or the output is overwritten)."""
        self.output.remove(entry.name)

    def read(self, entries: list[Committed]) -> list[CommitRecord]:
        """The records of ``entries``: from the digest where it has them, the rest read in parallel."""
        digest = self._digest()
        names = digest.column("name").to_pylist() if digest is not None else []
        position = {name: index for index, name in enumerate(names)}
        wanted = [position[entry.name] for entry in entries if entry.name in position]
        known = {}
        if wanted:
            for row in digest.take(wanted).select(["name", "record"]).to_pylist():
                known[row["name"]] = CommitRecord.from_json(json.loads(row["record"]))
        known.update(self._read_files([entry for entry in entries if entry.name not in position]))
        return [known[entry.name] for entry in entries if entry.name in known]

    def totals(self, entries: list[Committed]) -> "LedgerTotals":
        """Rows, rejects by reason, tokens and precisions summed over ``entries``, without building a
        record per unit where the digest has them (``status`` at 100,000 units)."""
        import pyarrow.compute as pc

        digest = self._digest()
        totals = LedgerTotals()
        covered: set[str] = set()
        if digest is not None:
            mine = digest.filter(pc.is_in(digest.column("name"), pa.array([entry.name for entry in entries], pa.string())))
            covered = set(mine.column("name").to_pylist())
            for column in ("rows_in", "rows_out", "rows_rejected", "tokens"):
                setattr(totals, column, int(pc.sum(mine.column(column)).as_py() or 0))
            counts = pc.value_counts(mine.column("precision"))
            totals.precision.update({item["values"]: item["counts"] for item in counts.to_pylist()})
            for reasons in pc.unique(mine.column("reasons")).to_pylist():
                if reasons != "{}":
                    times = int(pc.sum(pc.equal(mine.column("reasons"), reasons)).as_py())
                    for reason, count in json.loads(reasons).items():
                        totals.reasons[reason] += count * times
        for record in self._read_files([entry for entry in entries if entry.name not in covered]).values():
            totals.add(record)
        return totals

    def _read_files(self, entries: list[Committed]) -> dict[str, CommitRecord]:
        def read_one(entry: Committed) -> CommitRecord | None:
            data = self.output.read_json(entry.name)
            return CommitRecord.from_json(data) if data else None

        with ThreadPoolExecutor(max_workers=16) as pool:
            return {entry.name: record for entry, record in zip(entries, pool.map(read_one, entries)) if record}

    def refresh_digest(self) -> int:
        """Rewrite the digest from the current records (reading only those it lacks); returns their count."""
        records = self.read(list(self.committed().values()))
        table = pa.table({
            "name": [r.name for r in records],
            "record": [json.dumps(r.to_json()) for r in records],
            "rows_in": pa.array([r.rows_in for r in records], pa.int64()),
            "rows_out": pa.array([r.rows_out for r in records], pa.int64()),
            "rows_rejected": pa.array([r.rows_rejected for r in records], pa.int64()),
            "tokens": pa.array([r.tokens for r in records], pa.int64()),
            "precision": pa.array([r.precision for r in records], pa.string()),
            "reasons": pa.array([json.dumps(r.reasons, sort_keys=True) for r in records], pa.string()),
        })
        sink = io.BytesIO()
        pq.write_table(table, sink, compression="zstd")
        self.output.write_atomic(LEDGER_DIGEST, sink.getvalue())
        return len(records)

    def _digest(self) -> pa.Table | None:
        try:
            return pq.ParquetFile(pa.BufferReader(self.output.read_bytes(LEDGER_DIGEST))).read(use_threads=False)
        except (FileNotFoundError, pa.ArrowException):
            return None

    # -- the output's identity ---------------------------------------------------------------
    def manifest(self) -> Manifest | None:
        data = self.output.read_json(MANIFEST)
        return Manifest.from_json(data) if data else None

    def write_manifest(self, manifest: Manifest) -> None:
        self.output.write_json(MANIFEST, manifest.to_json(), indent=1)


def check_compatible(existing: Manifest | None, wanted: Manifest, where: str) -> None:
    """Refuse a run whose stack or layout differs from what the output holds."""
    if existing is None:
        return
    differs = existing.mismatch(wanted)
    if differs:
        raise OutputMismatchError(
            f"output {where!r} holds vectors from another stack or layout ({'; '.join(differs)}). "
            f"Use a new output.path, or pass --overwrite to delete the existing output first."
        )
