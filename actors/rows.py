"""The row protocol: what readers, the embedding actor and the writers exchange, in one place.

Rows flow one way, read → embed → write, as Arrow tables:

1. **Reader rows** (``reader_schema``): one per input row of a unit, numbered ``seq`` 0..n-1, with
   ``kind`` saying what to do with it: ``doc`` (embed it), ``reject`` (``reason`` and a human
   ``detail``), and one ``end`` row per unit whose ``seq`` is the unit's row count, so that a unit
   with no rows at all still completes. Ids travel as text (``id``) plus ``int_id`` when the input's
   id was an integer, so blocks of int-id and string-id shards share one schema.
2. **Actor rows**: the reader's bookkeeping columns (``PASS_THROUGH``), ``doc_end`` (true on the
   last output row of an input row, whatever the granularity), ``node`` (where it was embedded),
   and the data columns of ``data_schema``.
3. **Writer records** (``WRITER_RECORD_SCHEMA``): one per unit, node and staged part, telling the
   driver which rows a part covered; the driver commits a unit once its rows are all accounted for.

Published files hold ``data_schema``'s columns only, and rejects ``REJECTS_SCHEMA``'s. Torch-free.
"""
from __future__ import annotations

from enum import Enum

import pyarrow as pa


class RowKind(str, Enum):
    DOC = "doc"
    REJECT = "reject"
    END = "end"


class Reason(str, Enum):
    """Why a row was rejected. Each becomes a row in ``_rejects/`` with its shard, row, id and detail."""

    MALFORMED_JSON = "malformed_json"
    INVALID_UTF8 = "invalid_utf8"
    INVALID_TEXT = "invalid_text"            # a string Arrow/Parquet cannot store (a lone surrogate)
    NOT_AN_OBJECT = "not_an_object"
    MISSING_TEXT = "missing_text"
    NOT_STRING = "not_string"
    EMPTY_TEXT = "empty_text"
    TOO_LONG = "too_long"
    MISSING_ID = "missing_id"
    BAD_ID = "bad_id"                        # not a string or an integer, or (id_type int) not an integer
    ID_TYPE_MISMATCH = "id_type_mismatch"    # an int id in a unit of string ids, or the reverse
    DUPLICATE_ID = "duplicate_id"
    MISSING_COLUMN = "missing_column"
    TRUNCATED_STREAM = "truncated_stream"
    UNREADABLE_SHARD = "unreadable_shard"    # the unit fails and is retried by the next run
    EMBEDDING_ERROR = "embedding_error"


# A unit with one of these rejects fails as a whole (it is not committed; the next run retries it).
UNIT_FAILING_REASONS = frozenset({Reason.UNREADABLE_SHARD.value})

ID_TYPES = {"string": pa.string(), "int": pa.int64()}


def reader_schema() -> pa.Schema:
    return pa.schema([
        ("unit", pa.string()),
        ("seq", pa.int64()),
        ("row", pa.int64()),
        ("id", pa.string()),
        ("int_id", pa.int64()),
        ("text", pa.string()),
        ("kind", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
    ])


READER_SCHEMA = reader_schema()

# Reader columns the actor passes through untouched (it replaces ``text`` by vectors).
PASS_THROUGH = ("unit", "seq", "row", "id", "int_id", "kind", "reason", "detail")
# Actor columns that are bookkeeping, never published.
BOOKKEEPING = (*PASS_THROUGH, "doc_end", "node")


def vector_type(dim: int, dtype: str) -> pa.DataType:
    """``fixed_size_list<float32|float16>[dim]``: a fixed-size array in every reader (DuckDB ``FLOAT[dim]``)."""
    return pa.list_(pa.float16() if dtype == "float16" else pa.float32(), dim)


def data_schema(granularity: str, dim: int, dtype: str, id_type: str, keep_text: bool = False) -> pa.Schema:
    """The columns of a published Parquet file, in order.

    document: ``id``, [``text``], ``n_tokens``, ``vector``; sentence: ``id``, ``sentence``, ``text``,
    ``n_tokens``, ``vector``; token: ``id``, ``sentence``, ``tokens``, ``n_tokens``, ``vectors``.
    """
    fields: list[tuple[str, pa.DataType]] = [("id", ID_TYPES[id_type])]
    if granularity != "document":
        fields.append(("sentence", pa.int32()))
    if granularity == "sentence" or keep_text:
        fields.append(("text", pa.string()))
    if granularity == "token":
        fields += [("tokens", pa.list_(pa.string())), ("n_tokens", pa.int32()),
                   ("vectors", pa.list_(vector_type(dim, dtype)))]
    else:
        fields += [("n_tokens", pa.int32()), ("vector", vector_type(dim, dtype))]
    return pa.schema(fields)


REJECTS_SCHEMA = pa.schema([
    ("unit", pa.string()),
    ("row", pa.int64()),
    ("id", pa.string()),
    ("reason", pa.string()),
    ("detail", pa.string()),
])

WRITER_RECORD_SCHEMA = pa.schema([
    ("unit", pa.string()),
    ("seq_min", pa.int64()),
    ("rows_done", pa.int64()),        # input rows (docs and rejects) fully written by this part
    ("end_total", pa.int64()),        # the unit's row count when this part holds its end row, else -1
    ("rows_out", pa.int64()),
    ("rejected", pa.int64()),
    ("reasons", pa.map_(pa.string(), pa.int64())),
    ("tokens", pa.int64()),
    ("dim", pa.int64()),
    ("id_type", pa.string()),          # "int" or "string" when the part holds documents, else ""
    ("data_file", pa.string()),
    ("rejects_file", pa.string()),
    ("node", pa.string()),
])
