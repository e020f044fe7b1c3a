"""The Parquet sink: embedded rows → staged part files; complete units → published under ``data/``.

Two steps, so that readers never see a partial unit:
1. ``write_parts`` (a Ray Data task) writes each batch's rows per unit into
   ``_staging/<run>/<unit>/`` (hidden from readers by the ``_``) and returns one small record per
   unit and part: which rows it covered and where it went.
2. ``publish_unit`` (the driver, once every row of a unit is accounted for) clears the unit's
   folder under ``data/`` and ``_rejects/`` and moves the staged parts in, named by position.
   The ledger commit follows; a crash in between only makes the unit run again, and the rerun
   overwrites the same names: every document ends up exactly once.
"""
from __future__ import annotations

import json
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.config import StorageConfig
from pipeline.layout import DATA_DIR, REJECTS_DIR, STAGING_DIR
from pipeline.storage import filesystem, join, move, remove_tree, write_bytes_atomic

INTERNAL_COLUMNS = ("unit", "seq", "row", "kind", "reject", "detail", "doc_end")

RECORD_SCHEMA = pa.schema([
    ("unit", pa.string()),
    ("seq_min", pa.int64()),
    ("rows_done", pa.int64()),
    ("end_total", pa.int64()),
    ("rows_out", pa.int64()),
    ("rejected", pa.int64()),
    ("reasons", pa.string()),
    ("tokens", pa.int64()),
    ("dim", pa.int64()),
    ("data_file", pa.string()),
    ("rejects_file", pa.string()),
])


def _parquet_bytes(table: pa.Table, metadata: dict[str, str]) -> bytes:
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **{k.encode(): v.encode() for k, v in metadata.items()}})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def _rejects_table(rows: pa.Table, shard_key: str | None) -> pa.Table:
    return pa.table({
        "unit": rows.column("unit"),
        "row": rows.column("row"),
        "id": rows.column("id"),
        "reason": rows.column("reject"),
        "detail": rows.column("detail"),
    })


def write_parts(batch: pa.Table, output_url: str, storage: dict[str, Any], run_id: str,
                metadata: dict[str, str]) -> pa.Table:
    """Ray Data task: stage this batch's rows per unit and return one record per unit."""
    fs, root = filesystem(output_url, StorageConfig.model_validate(storage))
    records: dict[str, list[Any]] = {name: [] for name in RECORD_SCHEMA.names}
    for unit in pc.unique(batch.column("unit")).to_pylist():
        rows = batch.filter(pc.equal(batch.column("unit"), unit))
        kinds = rows.column("kind")
        seq_min = pc.min(rows.column("seq")).as_py()
        stage = join(root, STAGING_DIR, run_id, unit)
        tag = f"{seq_min:012d}-{uuid.uuid4().hex[:8]}"

        docs = rows.filter(pc.equal(kinds, "doc"))
        data_file = rejects_file = ""
        dim = 0
        if docs.num_rows:
            data = docs.drop_columns([name for name in INTERNAL_COLUMNS if name in docs.column_names])
            vector_field = data.schema.field("vector" if "vector" in data.column_names else "vectors")
            dim = vector_field.type.list_size if pa.types.is_fixed_size_list(vector_field.type) else vector_field.type.value_type.list_size
            data_file = join(stage, f"part-{tag}.parquet")
            write_bytes_atomic(fs, data_file, _parquet_bytes(data, {**metadata, "corpus_embed.dim": str(dim)}))

        rejects = rows.filter(pc.equal(kinds, "reject"))
        if rejects.num_rows:
            rejects_file = join(stage, f"rejects-{tag}.parquet")
            write_bytes_atomic(fs, rejects_file, _parquet_bytes(_rejects_table(rejects, None), {}))

        ends = rows.filter(pc.equal(kinds, "end"))
        done = rows.filter(pc.and_(pc.not_equal(kinds, "end"), rows.column("doc_end")))
        n_tokens = pc.sum(docs.column("n_tokens")).as_py() if docs.num_rows else 0
        reasons = Counter(rejects.column("reject").to_pylist())
        for name, value in (
            ("unit", unit), ("seq_min", seq_min), ("rows_done", done.num_rows),
            ("end_total", ends.column("seq")[0].as_py() if ends.num_rows else -1),
            ("rows_out", docs.num_rows), ("rejected", rejects.num_rows), ("reasons", json.dumps(reasons)),
            ("tokens", int(n_tokens or 0)), ("dim", dim), ("data_file", data_file), ("rejects_file", rejects_file),
        ):
            records[name].append(value)
    return pa.table(records, schema=RECORD_SCHEMA)


@dataclass
class UnitProgress:
    """What the driver has heard about one unit so far."""

    done: int = 0
    end_total: int = -1
    rows_out: int = 0
    rejected: int = 0
    tokens: int = 0
    dim: int = 0
    reasons: Counter = field(default_factory=Counter)
    data_parts: list[tuple[int, str]] = field(default_factory=list)
    reject_parts: list[tuple[int, str]] = field(default_factory=list)

    def add(self, record: dict[str, Any]) -> None:
        self.done += record["rows_done"]
        if record["end_total"] >= 0:
            self.end_total = record["end_total"]
        self.rows_out += record["rows_out"]
        self.rejected += record["rejected"]
        self.tokens += record["tokens"]
        self.dim = self.dim or record["dim"]
        self.reasons.update(json.loads(record["reasons"]))
        if record["data_file"]:
            self.data_parts.append((record["seq_min"], record["data_file"]))
        if record["rejects_file"]:
            self.reject_parts.append((record["seq_min"], record["rejects_file"]))

    @property
    def complete(self) -> bool:
        return self.end_total >= 0 and self.done == self.end_total


def publish_unit(fs: Any, root: str, unit: str, progress: UnitProgress) -> list[str]:
    """Replace the unit's published files by its staged parts; returns the published paths."""
    published: list[str] = []
    for folder, parts in ((DATA_DIR, progress.data_parts), (REJECTS_DIR, progress.reject_parts)):
        target_dir = join(root, folder, unit)
        remove_tree(fs, target_dir)
        for index, (_, staged) in enumerate(sorted(parts)):
            target = join(target_dir, f"part-{index:05d}.parquet")
            move(fs, staged, target)
            published.append(target)
    return published


def discard_staging(fs: Any, root: str, run_id: str | None = None) -> None:
    """Drop staged parts: one run's, or (at start-up) every earlier run's leftovers."""
    remove_tree(fs, join(root, STAGING_DIR, run_id) if run_id else join(root, STAGING_DIR))
