"""Outputs written the way a run writes them (Parquet parts under data/, a manifest, ledger commits),
with vectors chosen by the test, so index behaviour can be checked against known answers quickly."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.ledger import Ledger
from pipeline.sink import DATA_DIR
from pipeline.storage import filesystem, join, remove_tree

DEFAULT_STACK = [{"transformer": {"model": "default", "layers": "-1", "layer_mean": True, "subtoken_pooling": "mean",
                                  "layer_combine": None, "use_scalar_mix": False, "scalar_mix_weights": None,
                                  "scalar_mix_gamma": 1.0, "allow_long_sentences": True}}]


def clustered_vectors(n: int, dim: int, seed: int, clusters: int = 50, spread: float = 0.6) -> np.ndarray:
    """Gaussian blobs around random centres: neighbour structure like real embeddings, reproducible."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(1234).normal(size=(clusters, dim))
    return (centres[rng.integers(0, clusters, n)] + spread * rng.normal(size=(n, dim))).astype(np.float32)


class FakeOutput:
    def __init__(self, root: Path | str, dim: int, granularity: str = "document", stack_fingerprint: str = "f" * 32,
                 stack: list[dict[str, Any]] | None = None, dtype: str = "float32"):
        self.url = str(root)
        self.fs, self.root = filesystem(self.url)
        self.dim, self.granularity, self.dtype = dim, granularity, dtype
        self.ledger = Ledger(self.fs, self.root)
        self.ledger.claim({"stack_fingerprint": stack_fingerprint, "dtype": dtype, "granularity": granularity,
                           "stack": stack or DEFAULT_STACK, "pooling": "mean", "dim": dim, "version": "test"})
        self.units: dict[str, tuple[list[str], np.ndarray]] = {}

    def commit(self, unit: str, ids: list[str], vectors: np.ndarray, version: str = "v1",
               texts: list[str] | None = None, parts: int = 1) -> None:
        """Write the unit's parts and commit it under a fingerprint derived from ``version``."""
        folder = join(self.root, DATA_DIR, unit)
        remove_tree(self.fs, folder)
        self.fs.makedirs(folder, exist_ok=True)
        value_type = pa.float16() if self.dtype == "float16" else pa.float32()
        files = []
        for index, chunk in enumerate(np.array_split(np.arange(len(ids)), parts)):
            flat = pa.array(vectors[chunk].astype(np.float16 if self.dtype == "float16" else np.float32).ravel(), value_type)
            columns: dict[str, Any] = {"id": pa.array([ids[i] for i in chunk], pa.string()),
                                       "vector": pa.FixedSizeListArray.from_arrays(flat, self.dim),
                                       "n_tokens": pa.array([5] * len(chunk), pa.int32())}
            if self.granularity == "sentence":
                columns["sentence"] = pa.array([int(i % 3) for i in chunk], pa.int32())
                columns["text"] = pa.array([(texts or ids)[i] for i in chunk], pa.string())
            path = join(folder, f"part-{index:05d}.parquet")
            pq.write_table(pa.table(columns), path, row_group_size=700)
            files.append(path)
        fingerprint = hashlib.sha1(f"{unit}:{version}".encode()).hexdigest()[:16]
        self.ledger.commit(unit, fingerprint, {"shard": unit, "rows_in": len(ids), "rows_out": len(ids),
                                               "rows_rejected": 0, "dim": self.dim, "files": files, "run_id": f"run-{version}"})
        self.units[unit] = (list(ids), vectors)

    def delete(self, unit: str) -> None:
        remove_tree(self.fs, join(self.root, DATA_DIR, unit))
        self.ledger.forget(unit)
        del self.units[unit]

    def current_ids(self) -> list[str]:
        return sorted(i for ids, _ in self.units.values() for i in ids)

    def current_vectors(self) -> tuple[list[str], np.ndarray]:
        keys = sorted(self.units)
        ids = [i for key in keys for i in self.units[key][0]]
        return ids, np.concatenate([self.units[key][1] for key in keys])
