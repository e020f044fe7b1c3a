"""The id map: integer labels in the FAISS index ↔ the output's string ids, one Parquet file per unit.

Labels of a unit are one contiguous range (``first_label + row``), so the metadata alone tells which
unit a label belongs to; the unit's file gives the id (and for sentence outputs the sentence number
and a text snippet). One file per unit means an incremental build writes only the new units' files
and deletes only the removed ones', and a search reads one small file per hit, never the whole map.
"""
from __future__ import annotations

import bisect
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.index.layout import IndexMeta

ROW_GROUP_ROWS = 8_192   # small groups: a search reads only the groups that hold its hits


class IdMapWriter:
    """Writes one unit's id map to a local file, batch by batch (bounded memory for big units)."""

    def __init__(self, local_path: str, first_label: int):
        self.local_path = local_path
        self.next_label = first_label
        self._writer: pq.ParquetWriter | None = None

    def write(self, info: pa.Table) -> None:
        labels = pa.array(range(self.next_label, self.next_label + info.num_rows), pa.int64())
        table = info.select([name for name in ("id", "sentence", "text") if name in info.column_names])
        table = table.add_column(0, "label", labels)
        table = table.cast(self._schema(table))
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.local_path, table.schema, compression="zstd")
        self._writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
        self.next_label += info.num_rows

    @staticmethod
    def _schema(table: pa.Table) -> pa.Schema:
        fields = [pa.field("label", pa.int64()), pa.field("id", pa.string())]
        if "sentence" in table.column_names:
            fields.append(pa.field("sentence", pa.int32()))
        if "text" in table.column_names:
            fields.append(pa.field("text", pa.string()))
        return pa.schema(fields)

    def close(self) -> None:
        if self._writer is None:   # an empty unit still gets a (valid, empty) file
            pq.write_table(pa.table({"label": pa.array([], pa.int64()), "id": pa.array([], pa.string())}), self.local_path)
        else:
            self._writer.close()


class LabelLookup:
    """Label → (unit, row) by binary search over the units' first labels."""

    def __init__(self, meta: IndexMeta):
        ranges = sorted((entry.first_label, entry.count, key) for key, entry in meta.units.items())
        self._starts = [start for start, _, _ in ranges]
        self._ranges = ranges

    def unit_of(self, label: int) -> tuple[str, int] | None:
        position = bisect.bisect_right(self._starts, label) - 1
        if position < 0:
            return None
        start, count, key = self._ranges[position]
        return (key, label - start) if label < start + count else None


def read_rows(fs: Any, path: str, rows: list[int]) -> list[dict[str, Any]]:
    """The given rows of one unit's id map, reading only the row groups that hold them.

    A unit can hold millions of rows (a big JSONL shard); a query needs a handful, so the footer
    says where each row group starts and only those groups are fetched (ranged reads on object stores).
    """
    found: dict[int, dict[str, Any]] = {}
    with fs.open(path, "rb") as handle:
        parquet = pq.ParquetFile(handle)
        starts = [0]
        for group in range(parquet.metadata.num_row_groups):
            starts.append(starts[-1] + parquet.metadata.row_group(group).num_rows)
        by_group: dict[int, list[int]] = {}
        for row in rows:
            if not 0 <= row < starts[-1]:
                raise IndexError(f"{path}: row {row} is outside the id map's {starts[-1]} rows; rebuild the index")
            by_group.setdefault(bisect.bisect_right(starts, row) - 1, []).append(row)
        for group, members in by_group.items():
            table = parquet.read_row_group(group)
            for row in members:
                found[row] = table.slice(row - starts[group], 1).to_pylist()[0]
    return [found[row] for row in rows]


def iter_ids(fs: Any, path: str) -> Iterator[dict[str, Any]]:
    with fs.open(path, "rb") as handle:
        parquet = pq.ParquetFile(handle)
        for batch in parquet.iter_batches(columns=["label", "id"]):
            yield from batch.to_pylist()
