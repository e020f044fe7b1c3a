"""Read one unit into blocks of reader rows (``actors.rows``), turning every bad row into a reject.

No row can fail a read: a value that JSON, UTF-8, Arrow or Parquet refuses becomes a reject with
its shard, row, id and a reason, and every other row goes on. A stream that breaks mid-way (a
truncated ``.gz``) keeps the rows read before the break; a shard that cannot be opened at all
becomes one ``unreadable_shard`` reject, which fails its unit only.

Rows are numbered by line (JSONL/text, blank lines skipped but counted) or by position (Parquet);
default ids are ``<shard-key>:<row>``. Ids keep their type (``input.id_type``, see ``IdRule``).
"""
from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterator

import pyarrow as pa

from actors.rows import READER_SCHEMA, Reason, RowKind
from pipeline.config import InputConfig, StorageConfig
from pipeline.storage import filesystem, parquet_file
from pipeline.units import Unit

SNIPPET_CHARS = 200
_INTEGER = re.compile(r"-?\d{1,18}")


def printable(text: str, limit: int = SNIPPET_CHARS) -> str:
    """``text`` cut to ``limit`` characters and safe to store (lone surrogates escaped)."""
    return text[:limit].encode("utf-8", "backslashreplace").decode("utf-8")


class _Reject(Exception):
    """One row's rejection: its reason and the human detail."""

    def __init__(self, reason: Reason, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class IdRule:
    """How ids are read, and the type of the unit's ids so far (fixed by its first document).

    ``auto`` keeps the input's type: integers stay integers, strings stay strings, and a row whose
    id type differs from the unit's first is rejected (``id_type_mismatch``) instead of being merged
    with another row's id. ``string`` turns every id into text (``str(7)`` is ``"7"``); ``int``
    turns integer strings into integers and rejects other ids. Booleans, floats, lists and objects
    are never ids (``bad_id``).
    """

    mode: str
    unit_type: str | None = None
    seen: set[Any] = field(default_factory=set)

    def read(self, raw: Any) -> tuple[str, int | None]:
        """(the id as text, the id as an int or None) for a raw input id; raises ``_Reject``."""
        if isinstance(raw, bool) or not isinstance(raw, (str, int)):
            raise _Reject(Reason.BAD_ID, f"an id must be a string or an integer, got {type(raw).__name__} {printable(repr(raw), 60)}")
        if isinstance(raw, str) and not _encodable(raw):
            raise _Reject(Reason.BAD_ID, f"id {printable(raw, 60)!r} holds characters that cannot be stored (a lone surrogate)")
        if self.mode == "string":
            value: str | int = str(raw)
        elif self.mode == "int":
            if isinstance(raw, str) and not _INTEGER.fullmatch(raw.strip()):
                raise _Reject(Reason.BAD_ID, f"id {printable(raw, 60)!r} is not an integer (input.id_type is int)")
            value = int(raw)
        else:
            value = raw
        kind = "int" if isinstance(value, int) else "string"
        if self.unit_type is not None and kind != self.unit_type:
            raise _Reject(Reason.ID_TYPE_MISMATCH,
                          f"id {value!r} is {'an int' if kind == 'int' else 'a string'} but this shard's ids are "
                          f"{self.unit_type}s; set input.id_type to string (or int) to convert them")
        if (kind, value) in self.seen:
            raise _Reject(Reason.DUPLICATE_ID, f"id {value!r} already seen in this shard")
        return str(value), (value if isinstance(value, int) else None)

    def accept(self, text_id: str, int_id: int | None) -> None:
        kind = "string" if int_id is None else "int"
        self.unit_type = self.unit_type or kind
        self.seen.add((kind, int_id if int_id is not None else text_id))


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass
class _BlockBuilder:
    unit: str
    columns: dict[str, list[Any]] = field(default_factory=lambda: {name: [] for name in READER_SCHEMA.names})
    seq: int = 0

    def add(self, row: int, kind: RowKind, id_: str | None = None, int_id: int | None = None,
            text: str | None = None, reason: Reason | None = None, detail: str | None = None) -> None:
        values = (self.unit, self.seq, row, id_, int_id, text, kind.value, reason.value if reason else None, detail)
        for name, value in zip(READER_SCHEMA.names, values):
            self.columns[name].append(value)
        self.seq += 1

    def reject(self, row: int, id_: str, reason: Reason, detail: str) -> None:
        self.add(row, RowKind.REJECT, printable(id_, 500), None, None, reason, printable(detail, 1000))

    def __len__(self) -> int:
        return len(self.columns["seq"])

    def flush(self) -> pa.Table:
        columns, self.columns = self.columns, {name: [] for name in READER_SCHEMA.names}
        try:
            return pa.table(columns, schema=READER_SCHEMA)
        except (pa.ArrowException, UnicodeError, OverflowError):
            return pa.Table.from_pylist(_storable_rows(columns), schema=READER_SCHEMA)


def _storable_rows(columns: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The block's rows, each one Arrow can store; a row it refuses becomes an ``invalid_text`` reject.

    Only reached when the checks before missed a value Arrow refuses: the row is kept in the count
    (its unit still completes) and every other row of the block goes on.
    """
    rows = [dict(zip(columns, values)) for values in zip(*columns.values())]
    for row in rows:
        try:
            pa.Table.from_pylist([row], schema=READER_SCHEMA)
        except (pa.ArrowException, UnicodeError, OverflowError) as error:
            row.update(id=printable(str(row["id"]), 500), int_id=None, text=None, kind=RowKind.REJECT.value,
                       reason=Reason.INVALID_TEXT.value, detail=printable(f"{type(error).__name__}: {error}", 1000))
    return rows


class _RowChecker:
    """Validation shared by all formats: the record's shape, its text and its id."""

    def __init__(self, unit: Unit, config: InputConfig, builder: _BlockBuilder):
        self.shard_key = unit.shard.key
        self.config = config
        self.builder = builder
        self.ids = IdRule(config.id_type)

    def emit(self, row: int, record: Any, snippet: str) -> None:
        default_id = f"{self.shard_key}:{row}"
        shown_id = default_id
        try:
            if not isinstance(record, dict):
                raise _Reject(Reason.NOT_AN_OBJECT, f"expected a JSON object, got {type(record).__name__}")
            if self.config.id_field is not None:
                raw_id = record.get(self.config.id_field)
                if raw_id is None:
                    raise _Reject(Reason.MISSING_ID, f"field {self.config.id_field!r} missing")
                shown_id = str(raw_id) if isinstance(raw_id, (str, int)) else default_id
                doc_id, int_id = self.ids.read(raw_id)
            else:
                doc_id, int_id = self.ids.read(default_id)
            text = self._text(record)
        except _Reject as rejected:
            self.builder.reject(row, shown_id, rejected.reason, f"{rejected}; row starts: {printable(snippet)!r}")
            return
        self.ids.accept(doc_id, int_id)
        self.builder.add(row, RowKind.DOC, doc_id, int_id, text)

    def _text(self, record: dict[str, Any]) -> str:
        field_name = self.config.text_field
        if field_name not in record or record[field_name] is None:
            raise _Reject(Reason.MISSING_TEXT, f"field {field_name!r} missing (set input.text_field)")
        text = record[field_name]
        if not isinstance(text, str):
            raise _Reject(Reason.NOT_STRING, f"field {field_name!r} is {type(text).__name__}, not a string")
        if not _encodable(text):
            raise _Reject(Reason.INVALID_TEXT, f"field {field_name!r} holds characters that cannot be stored as "
                                               f"UTF-8 (a lone surrogate such as \\ud800)")
        if not text.strip():
            raise _Reject(Reason.EMPTY_TEXT, f"field {field_name!r} is empty or whitespace")
        if len(text) > self.config.max_chars:
            raise _Reject(Reason.TOO_LONG, f"{len(text)} characters > input.max_chars={self.config.max_chars}")
        return text


def _read_lines(unit: Unit, config: InputConfig, storage: StorageConfig | None, builder: _BlockBuilder,
                block_rows: int) -> Iterator[pa.Table]:
    checker = _RowChecker(unit, config, builder)
    fs, path = filesystem(unit.shard.url, storage)
    row = -1
    try:
        with fs.open(path, "rb", compression=unit.shard.compression) as handle:
            for row, raw in enumerate(handle):
                stripped = raw.strip()
                if stripped:
                    _read_line(unit, config, checker, builder, row, stripped)
                if len(builder) >= block_rows:
                    yield builder.flush()
    except (EOFError, zlib.error, OSError, ValueError) as error:
        _reject_rest(builder, unit, row + 1, error)


def _read_line(unit: Unit, config: InputConfig, checker: _RowChecker, builder: _BlockBuilder, row: int,
               stripped: bytes) -> None:
    try:
        line = stripped.decode("utf-8")
    except UnicodeDecodeError as error:
        snippet = stripped[:SNIPPET_CHARS].decode("utf-8", errors="replace")
        builder.reject(row, f"{unit.shard.key}:{row}", Reason.INVALID_UTF8,
                       f"invalid UTF-8 at byte {error.start}; row starts: {snippet!r}")
        return
    if unit.shard.format == "text":
        record: Any = {config.text_field: line}
        if config.id_field is not None:
            record[config.id_field] = f"{unit.shard.key}:{row}"
        checker.emit(row, record, line)
        return
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, RecursionError) as error:
        message = f"{error.msg} at column {error.colno}" if isinstance(error, json.JSONDecodeError) else "nested too deeply"
        builder.reject(row, f"{unit.shard.key}:{row}", Reason.MALFORMED_JSON, f"{message}; row starts: {printable(line)!r}")
        return
    checker.emit(row, record, line)


def _reject_rest(builder: _BlockBuilder, unit: Unit, row: int, error: BaseException) -> None:
    """A stream that broke mid-way: rows read so far stay, the break itself becomes one reject."""
    name = type(error).__name__
    if isinstance(error, (EOFError, zlib.error)) or "compress" in str(error).lower() or "gzip" in name.lower():
        reason = Reason.TRUNCATED_STREAM
    else:
        reason = Reason.UNREADABLE_SHARD
    builder.reject(row, f"{unit.shard.key}:{row}", reason,
                   f"{name}: {error}; rows before row {row} were kept. Repair or re-upload the shard {unit.shard.key!r}")


def _parquet_texts(column: pa.Array) -> list[Any]:
    """A text column as Python values, decoding strings one by one: a file written without UTF-8
    checks may hold invalid bytes, which must reject that row only (``bytes`` marks them)."""
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        raw = column.cast(pa.large_binary() if pa.types.is_large_string(column.type) else pa.binary())
        values: list[Any] = []
        for item in raw.to_pylist():
            if item is None:
                values.append(None)
                continue
            try:
                values.append(item.decode("utf-8"))
            except UnicodeDecodeError:
                values.append(item)
        return values
    return column.to_pylist()


def _read_parquet(unit: Unit, config: InputConfig, storage: StorageConfig | None, builder: _BlockBuilder,
                  block_rows: int) -> Iterator[pa.Table]:
    checker = _RowChecker(unit, config, builder)
    fs, path = filesystem(unit.shard.url, storage)
    row = 0
    try:
        with fs.open(path, "rb", compression=unit.shard.compression) as handle:
            parquet = parquet_file(handle)
            names = parquet.schema_arrow.names
            if config.text_field not in names:
                builder.reject(-1, f"{unit.shard.key}:-1", Reason.MISSING_COLUMN,
                               f"Parquet shard {unit.shard.key!r} has no column {config.text_field!r} (columns: {names}); "
                               f"set input.text_field")
                return
            groups = list(unit.row_groups) if unit.row_groups else list(range(parquet.num_row_groups))
            row = sum(parquet.metadata.row_group(i).num_rows for i in range(groups[0])) if groups else 0
            has_ids = config.id_field is not None and config.id_field in names
            columns = [config.text_field] + ([config.id_field] if has_ids else [])
            for batch in parquet.iter_batches(batch_size=block_rows, row_groups=groups, columns=columns):
                texts = _parquet_texts(batch.column(config.text_field))
                ids = batch.column(config.id_field).to_pylist() if has_ids else [None] * len(texts)
                for text, raw_id in zip(texts, ids):
                    if isinstance(text, bytes):
                        builder.reject(row, str(raw_id) if raw_id is not None else f"{unit.shard.key}:{row}",
                                       Reason.INVALID_UTF8, f"column {config.text_field!r} holds invalid UTF-8; "
                                       f"row starts: {text[:SNIPPET_CHARS].decode('utf-8', 'replace')!r}")
                    else:
                        record = {config.text_field: text}
                        if has_ids:
                            record[config.id_field] = raw_id  # type: ignore[index]
                        checker.emit(row, record, str(text))
                    row += 1
                    if len(builder) >= block_rows:
                        yield builder.flush()
    except (OSError, ValueError, EOFError, pa.ArrowException) as error:
        _reject_rest(builder, unit, row, error)


def read_unit(unit: Unit, config: InputConfig, storage: StorageConfig | None = None,
              block_rows: int = 1024) -> Iterator[pa.Table]:
    """Yield blocks of reader rows for ``unit``, the last one ending with the ``end`` row.

    Never raises for what the shard holds: anything unexpected while reading becomes one
    ``unreadable_shard`` reject naming the shard, which fails this unit only.
    """
    builder = _BlockBuilder(unit.key)
    reader = _read_parquet if unit.shard.format == "parquet" else _read_lines
    try:
        yield from reader(unit, config, storage, builder, block_rows)
    except Exception as error:  # noqa: BLE001 - whatever broke, it stays this unit's failure
        builder.reject(-1, f"{unit.shard.key}:-1", Reason.UNREADABLE_SHARD,
                       f"{type(error).__name__}: {error}; shard {unit.shard.key!r} could not be read")
    builder.add(-1, RowKind.END)
    yield builder.flush()
