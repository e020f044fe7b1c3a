"""The Parquet sink: embedded rows → staged part files; complete units → published under ``data/``.

Two steps, so that readers never see a partial unit:
1. ``write_parts`` (the pool's actor, after it embeds a batch) writes the batch's rows per unit
   into this run's staging folder ``_staging/<run>/<unit>/`` (hidden from readers by the ``_``)
   and returns one writer record per unit (``actors.rows.WRITER_RECORD_SCHEMA``): which rows it
   covered and where they went.
2. ``publish_unit`` (the driver, once every row of a unit is accounted for) clears the unit's
   folder under ``data/`` and ``_rejects/`` and moves the staged parts in, named by position.
   The ledger commit follows; a crash in between only makes the unit run again, and the rerun
   overwrites the same names: every document ends up exactly once. A unit that fails (too many
   rejects, an unreadable shard) is not published: its rejects go to ``_failed/<unit>/``.
"""
from __future__ import annotations

import io
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from actors.rows import BOOKKEEPING, REJECTS_SCHEMA, WRITER_RECORD_SCHEMA, RowKind
from pipeline.layout import DATA_DIR, FAILED_DIR, LEDGER_DIR, REJECTS_DIR, RUNS_DIR, STAGING_DIR
from pipeline.storage import Folder


def parquet_bytes(table: pa.Table, metadata: dict[str, str]) -> bytes:
    """``table`` as zstd Parquet with ``metadata`` in the file's key-value metadata."""
    merged = {**(table.schema.metadata or {}), **{k.encode(): v.encode() for k, v in metadata.items()}}
    sink = io.BytesIO()
    pq.write_table(table.replace_schema_metadata(merged), sink, compression="zstd")
    return sink.getvalue()


def _data_table(docs: pa.Table) -> tuple[pa.Table, str]:
    """The published columns of a unit's document rows, with ids in their type (int or string)."""
    int_ids = docs.column("int_id")
    id_type = "int" if docs.num_rows and int_ids.null_count == 0 else "string"
    ids = int_ids if id_type == "int" else docs.column("id")
    data = docs.drop_columns([name for name in BOOKKEEPING if name in docs.column_names])
    return data.add_column(0, "id", ids), id_type


def _rejects_table(rows: pa.Table) -> pa.Table:
    return pa.table({name: rows.column(source).cast(REJECTS_SCHEMA.field(name).type)
                     for name, source in (("unit", "unit"), ("row", "row"), ("id", "id"),
                                          ("reason", "reason"), ("detail", "detail"))}, schema=REJECTS_SCHEMA)


def write_parts(batch: pa.Table, output: Folder, run_id: str, metadata: dict[str, str]) -> pa.Table:
    """Stage an embedded batch's rows per unit (the actor's last step) and return one writer record per unit."""
    records: dict[str, list[Any]] = {name: [] for name in WRITER_RECORD_SCHEMA.names}
    node = batch.column("node")[0].as_py() if batch.num_rows and "node" in batch.column_names else ""
    for unit in pc.unique(batch.column("unit")).to_pylist():
        rows = batch.filter(pc.equal(batch.column("unit"), unit))
        kinds = rows.column("kind")
        seq_min = pc.min(rows.column("seq")).as_py()
        stage = f"{STAGING_DIR}/{run_id}/{unit}"
        tag = f"{seq_min:012d}-{uuid.uuid4().hex[:8]}"

        docs = rows.filter(pc.equal(kinds, RowKind.DOC.value))
        data_file = rejects_file = id_type = ""
        dim = 0
        if docs.num_rows:
            data, id_type = _data_table(docs)
            vector_field = data.schema.field("vector" if "vector" in data.column_names else "vectors")
            vector_type = vector_field.type if pa.types.is_fixed_size_list(vector_field.type) else vector_field.type.value_type
            dim = vector_type.list_size
            data_file = f"{stage}/part-{tag}.parquet"
            output.write_atomic(data_file, parquet_bytes(data, {**metadata, "corpus_embed.dim": str(dim)}))

        rejects = rows.filter(pc.equal(kinds, RowKind.REJECT.value))
        if rejects.num_rows:
            rejects_file = f"{stage}/rejects-{tag}.parquet"
            output.write_atomic(rejects_file, parquet_bytes(_rejects_table(rejects), {}))

        ends = rows.filter(pc.equal(kinds, RowKind.END.value))
        done = rows.filter(pc.and_(pc.not_equal(kinds, RowKind.END.value), rows.column("doc_end")))
        n_tokens = pc.sum(docs.column("n_tokens")).as_py() if docs.num_rows else 0
        reasons = Counter(rejects.column("reason").to_pylist())
        for name, value in (
            ("unit", unit), ("seq_min", seq_min), ("rows_done", done.num_rows),
            ("end_total", ends.column("seq")[0].as_py() if ends.num_rows else -1),
            ("rows_out", docs.num_rows), ("rejected", rejects.num_rows), ("reasons", list(reasons.items())),
            ("tokens", int(n_tokens or 0)), ("dim", dim), ("id_type", id_type), ("data_file", data_file),
            ("rejects_file", rejects_file), ("node", node),
        ):
            records[name].append(value)
    return pa.table(records, schema=WRITER_RECORD_SCHEMA)


@dataclass
class UnitProgress:
    """What the driver has heard about one unit so far (summed over its writer records)."""

    done: int = 0
    end_total: int = -1
    rows_out: int = 0
    rejected: int = 0
    tokens: int = 0
    dim: int = 0
    id_types: set[str] = field(default_factory=set)
    reasons: Counter = field(default_factory=Counter)
    nodes: Counter = field(default_factory=Counter)        # node -> rows embedded there
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
        if record["id_type"]:
            self.id_types.add(record["id_type"])
        self.reasons.update(dict(record["reasons"] or []))
        if record["node"] and record["rows_done"]:
            self.nodes[record["node"]] += record["rows_done"]
        if record["data_file"]:
            self.data_parts.append((record["seq_min"], record["data_file"]))
        if record["rejects_file"]:
            self.reject_parts.append((record["seq_min"], record["rejects_file"]))

    @property
    def complete(self) -> bool:
        return self.end_total >= 0 and self.done == self.end_total

    @property
    def reject_ratio(self) -> float:
        return self.rejected / self.done if self.done else 0.0


def publish_unit(output: Folder, unit: str, progress: UnitProgress) -> list[str]:
    """Replace the unit's published files by its staged parts; returns the published paths."""
    published: list[str] = []
    for folder, parts in ((DATA_DIR, progress.data_parts), (REJECTS_DIR, progress.reject_parts)):
        target_dir = f"{folder}/{unit}"
        output.remove(target_dir)
        for index, (_, staged) in enumerate(sorted(parts)):
            target = f"{target_dir}/part-{index:05d}.parquet"
            output.move(staged, target)
            published.append(target)
    output.remove(f"{FAILED_DIR}/{unit}")
    return published


def keep_failed(output: Folder, unit: str, progress: UnitProgress, failure: dict[str, Any]) -> None:
    """A failed unit's rejects and reason under ``_failed/<unit>/``, for inspection; nothing published."""
    folder = f"{FAILED_DIR}/{unit}"
    output.remove(folder)
    for index, (_, staged) in enumerate(sorted(progress.reject_parts)):
        output.move(staged, f"{folder}/rejects-{index:05d}.parquet")
    output.write_json(f"{folder}/failure.json", failure, indent=1)


def discard_dead_writes(output: Folder, lease_taken_at: float) -> None:
    """What dead runs left half-done, swept by the lease holder: staged parts and unfinished files.

    A run killed mid-way may leave staged parts and, if it died inside an atomic write, that
    write's hidden temp file in the ledger, the run records, a failed unit's folder or the
    output's root. Readers skip both; the sweep keeps the output folder holding only what it says.
    """
    discard_staging(output)
    failed = [f"{FAILED_DIR}/{unit}" for unit in output.listdir(FAILED_DIR)]
    output.remove_stale_temps(["", LEDGER_DIR, RUNS_DIR, *failed], lease_taken_at)


def discard_staging(output: Folder, run_id: str | None = None) -> None:
    """Drop staged parts: one run's, or every run's (a lease holder sweeping dead runs' leftovers)."""
    output.remove(f"{STAGING_DIR}/{run_id}" if run_id else STAGING_DIR)
