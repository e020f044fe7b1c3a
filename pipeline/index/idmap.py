"""The id map: integer labels in the FAISS index ↔ the output's ids, one Parquet file per unit.

Labels of a unit are one contiguous range (``first_label + row``), so the metadata alone tells which
unit a label belongs to; the unit's file gives the id (and for sentence outputs the sentence number
and a text snippet). One file per unit means an incremental build writes only the new units' files
and deletes only the removed ones', and a search reads one small file per hit, never the whole map.

Ids keep the type the output gives them (``manifest.id_type``): ``int64`` for int ids, ``string``
for string ids, so a search returns ``7``, not ``"7"``.
"""
from __future__ import annotations

import bisect
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from actors.rows import ID_TYPES
from pipeline.index.errors import IndexBuildError
from pipeline.index.layout import IndexMeta
from pipeline.storage import Folder, parquet_file

ROW_GROUP_ROWS = 8_192   # small groups: a search reads only the groups that hold its hits


def id_type_of(column_type: pa.DataType, where: str) -> str:
    """``"int"`` or ``"string"``: the id type of a data file's ``id`` column."""
    if pa.types.is_integer(column_type):
        return "int"
    if pa.types.is_string(column_type) or pa.types.is_large_string(column_type):
        return "string"
    raise IndexBuildError(f"{where}: the id column has type {column_type}; ids are int64 or string")


class IdMapWriter:
    """Writes one unit's id map to a local file, batch by batch (bounded memory for big units).

    ``id_type`` is the index's id type, or None until the first unit sets it (``id_type`` after
    ``write``); a unit whose ids have the other type is refused.
    """

    def __init__(self, local_path: str, first_label: int, id_type: str | None, where: str):
        self.local_path = local_path
        self.next_label = first_label
        self.id_type = id_type
        self.where = where
        self._writer: pq.ParquetWriter | None = None

    def write(self, info: pa.Table) -> None:
        found = id_type_of(info.schema.field("id").type, self.where)
        if self.id_type is None:
            self.id_type = found
        elif found != self.id_type:
            raise IndexBuildError(f"{self.where}: its ids are {found}s but the index holds {self.id_type} ids; "
                                  f"index this output into a new INDEX, or pass --rebuild")
        labels = pa.array(range(self.next_label, self.next_label + info.num_rows), pa.int64())
        table = info.select([name for name in ("id", "sentence", "text") if name in info.column_names])
        table = table.add_column(0, "label", labels)
        table = table.cast(self._schema(table))
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.local_path, table.schema, compression="zstd")
        self._writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
        self.next_label += info.num_rows

    def _schema(self, table: pa.Table) -> pa.Schema:
        fields = [pa.field("label", pa.int64()), pa.field("id", ID_TYPES[self.id_type or "string"])]
        if "sentence" in table.column_names:
            fields.append(pa.field("sentence", pa.int32()))
        if "text" in table.column_names:
            fields.append(pa.field("text", pa.string()))
        return pa.schema(fields)

    def close(self) -> None:
        if self._writer is None:   # an empty unit still gets a (valid, empty) file
            pq.write_table(pa.table({"label": pa.array([], pa.int64()),
                                     "id": pa.array([], ID_TYPES[self.id_type or "string"])}), self.local_path)
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


def read_rows(folder: Folder, path: str, rows: list[int]) -> list[dict[str, Any]]:
    """The given rows of one unit's id map, reading only the row groups that hold them.

    A unit can hold millions of rows (a big JSONL shard); a query needs a handful, so the footer
    says where each row group starts and only those groups are fetched (ranged reads on object stores).
    """
    found: dict[int, dict[str, Any]] = {}
    with folder.open(path, "rb") as handle:
        parquet = parquet_file(handle)
        starts = [0]
        for group in range(parquet.metadata.num_row_groups):
            starts.append(starts[-1] + parquet.metadata.row_group(group).num_rows)
        by_group: dict[int, list[int]] = {}
        for row in rows:
            if not 0 <= row < starts[-1]:
                raise IndexError(f"{path}: row {row} is outside the id map's {starts[-1]} rows; rebuild the index")
            by_group.setdefault(bisect.bisect_right(starts, row) - 1, []).append(row)
        for group, members in by_group.items():
            table = parquet.read_row_group(group, use_threads=False)
            for row in members:
                found[row] = table.slice(row - starts[group], 1).to_pylist()[0]
    return [found[row] for row in rows]


def iter_ids(folder: Folder, path: str) -> Iterator[dict[str, Any]]:
    with folder.open(path, "rb") as handle:
        parquet = parquet_file(handle)
        for batch in parquet.iter_batches(columns=["label", "id"], use_threads=False):
            yield from batch.to_pylist()
