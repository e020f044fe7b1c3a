"""Read one unit into blocks of rows, turning every bad row into a reject instead of an error.

Each emitted row carries its unit key and ``seq`` (0..n-1 within the unit) so that downstream
stages can tell when a unit is complete. The last block of a unit ends with an ``end`` row whose
``seq`` is the number of rows before it: a unit with no rows at all still completes and commits.

Row kinds: ``doc`` (embed it), ``reject`` (reason in ``reject``, human detail in ``detail``),
``end`` (marker). Rows are numbered by line (JSONL/text, blank lines skipped but counted) or by
position (Parquet), and default ids are ``<shard-key>:<row>``.
"""
from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterator

import pyarrow as pa

from pipeline.config import InputConfig, StorageConfig
from pipeline.storage import filesystem
from pipeline.units import Unit

ROW_SCHEMA = pa.schema([
    ("unit", pa.string()),
    ("seq", pa.int64()),
    ("row", pa.int64()),
    ("id", pa.string()),
    ("text", pa.string()),
    ("kind", pa.string()),
    ("reject", pa.string()),
    ("detail", pa.string()),
])

SNIPPET_CHARS = 200


@dataclass
class _BlockBuilder:
    unit: str
    columns: dict[str, list[Any]] = field(default_factory=lambda: {name: [] for name in ROW_SCHEMA.names})
    seq: int = 0

    def add(self, row: int, kind: str, id_: str | None = None, text: str | None = None,
            reject: str | None = None, detail: str | None = None) -> None:
        values = (self.unit, self.seq, row, id_, text, kind, reject, detail)
        for name, value in zip(ROW_SCHEMA.names, values):
            self.columns[name].append(value)
        self.seq += 1

    def __len__(self) -> int:
        return len(self.columns["seq"])

    def flush(self) -> pa.Table:
        table = pa.table(self.columns, schema=ROW_SCHEMA)
        self.columns = {name: [] for name in ROW_SCHEMA.names}
        return table


class _RowChecker:
    """Validation shared by all formats: text type, emptiness, length, ids and duplicates."""

    def __init__(self, unit: Unit, config: InputConfig):
        self.shard_key = unit.shard.key
        self.config = config
        self.seen_ids: set[str] = set()

    def check(self, row: int, record: Any, snippet: str) -> tuple[str, str | None, str | None, str | None]:
        """Returns (kind, id, text_or_None, reject_reason) plus detail via ``self.detail``."""
        config = self.config
        default_id = f"{self.shard_key}:{row}"
        if not isinstance(record, dict):
            return self._reject(default_id, "not_an_object", f"expected a JSON object, got {type(record).__name__}", snippet)
        doc_id = default_id
        if config.id_field is not None:
            raw_id = record.get(config.id_field)
            if raw_id is None or isinstance(raw_id, (dict, list)):
                return self._reject(default_id, "missing_id", f"field {config.id_field!r} missing or not a scalar", snippet)
            doc_id = str(raw_id)
        if config.text_field not in record or record[config.text_field] is None:
            return self._reject(doc_id, "missing_text", f"field {config.text_field!r} missing", snippet)
        text = record[config.text_field]
        if not isinstance(text, str):
            return self._reject(doc_id, "not_string", f"field {config.text_field!r} is {type(text).__name__}, not a string", snippet)
        if not text.strip():
            return self._reject(doc_id, "empty_text", f"field {config.text_field!r} is empty or whitespace", snippet)
        if len(text) > config.max_chars:
            return self._reject(doc_id, "too_long", f"{len(text)} characters > input.max_chars={config.max_chars}", snippet)
        if doc_id in self.seen_ids:
            return self._reject(doc_id, "duplicate_id", f"id {doc_id!r} already seen in this shard", snippet)
        self.seen_ids.add(doc_id)
        self.detail = None
        return "doc", doc_id, text, None

    def _reject(self, doc_id: str, reason: str, message: str, snippet: str) -> tuple[str, str, None, str]:
        self.detail = f"{message}; row starts: {snippet[:SNIPPET_CHARS]!r}"
        return "reject", doc_id, None, reason

    detail: str | None = None


def _emit(builder: _BlockBuilder, checker: _RowChecker, row: int, record: Any, snippet: str) -> None:
    kind, doc_id, text, reason = checker.check(row, record, snippet)
    builder.add(row, kind, doc_id, text, reason, checker.detail)


def _iter_lines(unit: Unit, storage: StorageConfig | None) -> Iterator[bytes]:
    fs, path = filesystem(unit.shard.url, storage)
    with fs.open(path, "rb", compression=unit.shard.compression) as handle:
        for line in handle:
            yield line


def _read_lines(unit: Unit, config: InputConfig, storage: StorageConfig | None, builder: _BlockBuilder,
                block_rows: int) -> Iterator[pa.Table]:
    checker = _RowChecker(unit, config)
    row = -1
    try:
        for row, raw in enumerate(_iter_lines(unit, storage)):
            stripped = raw.strip()
            if not stripped:
                continue
            try:
                line = stripped.decode("utf-8")
            except UnicodeDecodeError as error:
                snippet = stripped[:SNIPPET_CHARS].decode("utf-8", errors="replace")
                builder.add(row, "reject", f"{unit.shard.key}:{row}", None, "invalid_utf8",
                            f"invalid UTF-8 at byte {error.start}; row starts: {snippet!r}")
            else:
                if unit.shard.format == "text":
                    record: Any = {config.text_field: line}
                    if config.id_field is not None:
                        record[config.id_field] = f"{unit.shard.key}:{row}"
                    _emit(builder, checker, row, record, line)
                else:
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as error:
                        builder.add(row, "reject", f"{unit.shard.key}:{row}", None, "malformed_json",
                                    f"{error.msg} at column {error.colno}; row starts: {line[:SNIPPET_CHARS]!r}")
                    else:
                        _emit(builder, checker, row, record, line)
            if len(builder) >= block_rows:
                yield builder.flush()
    except (EOFError, zlib.error, OSError, ValueError) as error:
        _reject_rest(builder, unit, row + 1, error)


def _reject_rest(builder: _BlockBuilder, unit: Unit, row: int, error: BaseException) -> None:
    """A stream that broke mid-way: rows read so far stay, the break itself becomes one reject."""
    name = type(error).__name__
    if isinstance(error, FileNotFoundError) or isinstance(error, PermissionError):
        reason = "unreadable_shard"
    elif isinstance(error, (EOFError, zlib.error)) or "compress" in str(error).lower() or "gzip" in name.lower():
        reason = "truncated_stream"
    else:
        reason = "unreadable_shard"
    builder.add(row, "reject", f"{unit.shard.key}:{row}", None, reason,
                f"{name}: {error}; rows before row {row} were kept. Re-upload or repair the shard {unit.shard.key!r}")


def _read_parquet(unit: Unit, config: InputConfig, storage: StorageConfig | None, builder: _BlockBuilder,
                  block_rows: int) -> Iterator[pa.Table]:
    import pyarrow.parquet as pq

    checker = _RowChecker(unit, config)
    fs, path = filesystem(unit.shard.url, storage)
    row = 0
    try:
        with fs.open(path, "rb", compression=unit.shard.compression) as handle:
            parquet = pq.ParquetFile(handle)
            names = parquet.schema_arrow.names
            if config.text_field not in names:
                builder.add(-1, "reject", f"{unit.shard.key}:-1", None, "missing_column",
                            f"Parquet shard {unit.shard.key!r} has no column {config.text_field!r} (columns: {names}); "
                            f"set input.text_field")
                return
            groups = list(unit.row_groups) if unit.row_groups else list(range(parquet.num_row_groups))
            row = sum(parquet.metadata.row_group(i).num_rows for i in range(groups[0])) if groups else 0
            columns = [config.text_field] + ([config.id_field] if config.id_field in names else [])
            for batch in parquet.iter_batches(batch_size=block_rows, row_groups=groups, columns=columns):
                for record in batch.to_pylist():
                    snippet = str(record.get(config.text_field))[:SNIPPET_CHARS]
                    _emit(builder, checker, row, record, snippet)
                    row += 1
                    if len(builder) >= block_rows:
                        yield builder.flush()
    except (OSError, ValueError, EOFError, pa.ArrowException) as error:
        _reject_rest(builder, unit, row, error)


def read_unit(unit: Unit, config: InputConfig, storage: StorageConfig | None = None,
              block_rows: int = 1024) -> Iterator[pa.Table]:
    """Yield blocks of ``ROW_SCHEMA`` rows for ``unit``, the last one ending with the ``end`` marker."""
    builder = _BlockBuilder(unit.key)
    reader = _read_parquet if unit.shard.format == "parquet" else _read_lines
    try:
        yield from reader(unit, config, storage, builder, block_rows)
    except (OSError, ValueError) as error:  # opening failed before any row
        _reject_rest(builder, unit, 0, error)
    builder.add(-1, "end")
    yield builder.flush()
