"""Streaming one committed unit's vectors out of the Parquet output, a record batch at a time.

Only the batch in hand is ever in memory (plus what the FAISS index itself holds): a unit's files
are read with ``ParquetFile.iter_batches``, vectors converted to float32 and L2-normalised (cosine
similarity), and the id columns passed on for the id map.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pyarrow as pa

from pipeline.index.errors import IndexBuildError
from pipeline.layout import DATA_DIR
from pipeline.ledger import CommitRecord
from pipeline.storage import Folder, parquet_file

BATCH_ROWS = 16_384
SNIPPET_CHARS = 200
ID_COLUMNS = ("id", "sentence", "text")


@dataclass
class Batch:
    vectors: np.ndarray          # [n, dim] float32, unit length (zero vectors stay zero)
    info: pa.Table               # id, int64 or string (+ sentence, text snippet when the output has them)


def unit_files(unit_key: str, record: CommitRecord) -> list[str]:
    """The unit's data files, in part order, as committed in its ledger record (relative to the output).

    A record lists every file the unit published, rejects included; only ``data/<unit>/`` holds vectors.
    """
    prefix = f"{DATA_DIR}/{unit_key}/"
    return sorted(path for path in record.files if path.startswith(prefix) and path.endswith(".parquet"))


def to_matrix(column: pa.ChunkedArray | pa.Array, dim: int, where: str) -> np.ndarray:
    """A ``fixed_size_list<float32|float16>[dim]`` column as a C-contiguous float32 matrix."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if not pa.types.is_fixed_size_list(array.type) or array.type.list_size != dim:
        raise IndexBuildError(f"{where}: vector column has type {array.type}, expected fixed_size_list<float>[{dim}] "
                              f"as the output's manifest says; the output is inconsistent, re-run the unit")
    if array.null_count:
        raise IndexBuildError(f"{where}: {array.null_count} null vector(s); the output is damaged, re-run the unit")
    values = array.flatten().to_numpy(zero_copy_only=False)   # flatten() honours slice offsets
    return np.array(values.reshape(-1, dim), dtype=np.float32, order="C")   # a writable copy


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length in place (zero rows stay zero); returns the same array."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    np.divide(vectors, norms, out=vectors, where=norms > 0)
    return vectors


def stream_unit(output: Folder, files: list[str], dim: int, batch_rows: int = BATCH_ROWS) -> Iterator[Batch]:
    """Yield the unit's rows batch by batch, vectors normalised, id columns alongside."""
    for path in files:
        with output.open(path, "rb") as handle:
            parquet = parquet_file(handle)
            names = parquet.schema_arrow.names
            if "vector" not in names or "id" not in names:
                raise IndexBuildError(f"{output.url_of(path)}: expected columns id and vector, found {names}; "
                                      f"token-granularity outputs (column 'vectors') cannot be indexed")
            wanted = ["vector", *[name for name in ID_COLUMNS if name in names]]
            for record_batch in parquet.iter_batches(batch_size=batch_rows, columns=wanted, use_threads=False):
                vectors = normalize(to_matrix(record_batch.column("vector"), dim, output.url_of(path)))
                info = pa.Table.from_batches([record_batch]).drop_columns(["vector"])
                if "text" in info.column_names:
                    snippets = pa.array([None if text is None else text[:SNIPPET_CHARS]
                                         for text in info.column("text").to_pylist()], pa.string())
                    info = info.set_column(info.column_names.index("text"), "text", snippets)
                yield Batch(vectors, info)


def sample_rows(batch: Batch, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A random share of the batch's vectors (for training quantizers without holding everything)."""
    if fraction >= 1.0:
        return batch.vectors
    keep = rng.random(len(batch.vectors)) < fraction
    return batch.vectors[keep]
