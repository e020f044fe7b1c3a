"""Outputs written the way a run writes them (Parquet parts under data/, a manifest, ledger commits),
with vectors chosen by the test, so index behaviour can be checked against known answers quickly."""
from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from actors.rows import ID_TYPES
from pipeline.layout import DATA_DIR
from pipeline.ledger import CommitRecord, Ledger, Manifest
from pipeline.storage import Folder

DEFAULT_STACK = [{"transformer": {"model": "default", "layers": "-1", "layer_mean": True, "subtoken_pooling": "mean",
                                  "layer_combine": None, "use_scalar_mix": False, "scalar_mix_weights": None,
                                  "scalar_mix_gamma": 1.0, "allow_long_sentences": True}}]
SETTINGS = "s0"   # the row-settings half of every unit's identity: fixed, only the source changes


def clustered_vectors(n: int, dim: int, seed: int, clusters: int = 50, spread: float = 0.6) -> np.ndarray:
    """Gaussian blobs around random centres: neighbour structure like real embeddings, reproducible."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(1234).normal(size=(clusters, dim))
    return (centres[rng.integers(0, clusters, n)] + spread * rng.normal(size=(n, dim))).astype(np.float32)


class FakeOutput:
    def __init__(self, root: Path | str, dim: int, granularity: str = "document", stack_fingerprint: str = "f" * 32,
                 stack: list[dict[str, Any]] | None = None, dtype: str = "float32", id_type: str = "string"):
        self.folder = Folder(str(root))
        self.url = self.folder.url
        self.dim, self.granularity, self.dtype, self.id_type = dim, granularity, dtype, id_type
        self.stack_fingerprint = stack_fingerprint
        self.ledger = Ledger(self.folder)
        self.ledger.write_manifest(Manifest(stack_fingerprint=stack_fingerprint, stack=stack or DEFAULT_STACK,
                                            pooling="mean", dtype=dtype, granularity=granularity, version="test",
                                            dim=dim, id_type=id_type))
        self.units: dict[str, tuple[list[str | int], np.ndarray]] = {}

    def commit(self, unit: str, ids: list[str] | list[int], vectors: np.ndarray, version: str = "v1",
               texts: list[str] | None = None, parts: int = 1, settings: str = SETTINGS) -> None:
        """Write the unit's parts and commit it under a source fingerprint derived from ``version``
        (and the row-settings hash ``settings``)."""
        folder = f"{DATA_DIR}/{unit}"
        self.folder.remove(folder)
        value_type = pa.float16() if self.dtype == "float16" else pa.float32()
        files = []
        for index, chunk in enumerate(np.array_split(np.arange(len(ids)), parts)):
            flat = pa.array(vectors[chunk].astype(np.float16 if self.dtype == "float16" else np.float32).ravel(), value_type)
            columns: dict[str, Any] = {"id": pa.array([ids[i] for i in chunk], ID_TYPES[self.id_type]),
                                       "vector": pa.FixedSizeListArray.from_arrays(flat, self.dim),
                                       "n_tokens": pa.array([5] * len(chunk), pa.int32())}
            if self.granularity == "sentence":
                columns["sentence"] = pa.array([int(i % 3) for i in chunk], pa.int32())
                columns["text"] = pa.array([(texts or [str(i) for i in ids])[i] for i in chunk], pa.string())
            path = f"{folder}/part-{index:05d}.parquet"
            sink = io.BytesIO()
            pq.write_table(pa.table(columns), sink, row_group_size=700)
            self.folder.write_atomic(path, sink.getvalue())
            files.append(path)
        source = hashlib.sha1(f"{unit}:{version}".encode()).hexdigest()[:16]
        self.ledger.commit(CommitRecord(
            unit=unit, source=source, settings=settings, shard=unit, shard_url=f"file:///input/{unit}.jsonl",
            size=len(ids), version=version, row_groups=None, rows_in=len(ids), rows_out=len(ids), rows_rejected=0,
            reasons={}, tokens=5 * len(ids), dim=self.dim, id_type=self.id_type, files=files,
            stack_fingerprint=self.stack_fingerprint, precision="float32", run_id=f"run-{version}",
        ), previous=self.ledger.committed().get(unit))
        self.units[unit] = (list(ids), vectors)

    def delete(self, unit: str) -> None:
        self.folder.remove(f"{DATA_DIR}/{unit}")
        self.ledger.forget(self.ledger.committed()[unit])
        del self.units[unit]

    def current_ids(self) -> list[str | int]:
        return sorted(i for ids, _ in self.units.values() for i in ids)

    def current_vectors(self) -> tuple[list[str | int], np.ndarray]:
        keys = sorted(self.units)
        ids = [i for key in keys for i in self.units[key][0]]
        return ids, np.concatenate([self.units[key][1] for key in keys])
