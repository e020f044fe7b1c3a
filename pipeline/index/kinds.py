"""The three index kinds in FAISS terms: how each is made, trained, shrunk, compacted and searched.

- ``flat``: exact inner-product search over every vector (``IndexIDMap2(IndexFlatIP)``). The reference
  for recall; memory 4·dim bytes per vector; removal is native.
- ``hnsw``: a navigable small-world graph (``IndexIDMap2(IndexHNSWFlat)``), the default: near-exact
  recall at a fraction of the search cost. FAISS cannot delete graph nodes, so removed labels are
  tombstones filtered at search time, and the graph is rebuilt from its own stored vectors once
  tombstones pass ``COMPACT_RATIO`` of it (filtered search degrades as dead nodes accumulate).
- ``ivfpq``: inverted lists over a trained coarse quantizer with product-quantized codes
  (``IndexIVFPQ``): ``pq_m`` bytes per vector instead of 4·dim, for corpora whose vectors do not fit
  in memory. Approximate scores, so lower recall; removal is native. Its quantizers are trained once,
  on a sample of the first build's vectors; ``--rebuild`` retrains after the corpus has changed a lot.
"""
from __future__ import annotations

import math
from typing import Any

import faiss
import numpy as np

from pipeline.index.errors import IndexBuildError
from pipeline.index.layout import KINDS

DEFAULT_KIND = "hnsw"
COMPACT_RATIO = 0.2
MIN_IVFPQ_VECTORS = 1_000
COMPACT_CHUNK = 65_536

# Settings fixed when an index is made (changing them needs --rebuild) and settings a search may vary.
STRUCTURAL = {"flat": (), "hnsw": ("hnsw_m", "ef_construction"), "ivfpq": ("nlist", "pq_m", "pq_bits")}
SEARCH_TIME = {"flat": (), "hnsw": ("ef_search",), "ivfpq": ("nprobe",)}


def _auto_nlist(count: int) -> int:
    """~4·√n lists, but at least 39 training points per list (FAISS's k-means floor)."""
    return max(1, min(int(4 * math.sqrt(count)), count // 39))


def _auto_pq_m(dim: int) -> int:
    """Two dimensions per sub-quantizer (the largest divisor of dim not above dim/2): ~0.8 recall@10 on
    clustered data at 8× less memory than flat; fewer sub-quantizers save more and recall less."""
    return max([m for m in range(1, max(1, dim // 2) + 1) if dim % m == 0])


def resolve_params(kind: str, dim: int, count: int, given: dict[str, Any]) -> dict[str, Any]:
    """Settings for a new index of ``count`` vectors: the given ones, the rest chosen from the data size."""
    given = {key: value for key, value in given.items() if value is not None}
    if kind == "flat":
        return {}
    if kind == "hnsw":
        params = {"hnsw_m": 32, "ef_construction": 200, "ef_search": 128, **given}
        for key in ("hnsw_m", "ef_construction", "ef_search"):
            if int(params[key]) < 1:
                raise IndexBuildError(f"--{key.replace('_', '-')} must be >= 1, got {params[key]}")
        return {key: int(params[key]) for key in ("hnsw_m", "ef_construction", "ef_search")}
    if kind == "ivfpq":
        if count < MIN_IVFPQ_VECTORS:
            raise IndexBuildError(f"ivfpq trains its quantizers on the vectors and needs at least {MIN_IVFPQ_VECTORS:,}; "
                                  f"the output holds {count:,}. Use --kind hnsw (or flat) until the corpus is larger")
        nlist = int(given.get("nlist") or _auto_nlist(count))
        pq_m = int(given.get("pq_m") or _auto_pq_m(dim))
        pq_bits = int(given.get("pq_bits") or 8)
        if not 1 <= nlist <= count:
            raise IndexBuildError(f"--nlist must be between 1 and the number of vectors ({count:,}), got {nlist}")
        if pq_m < 1 or dim % pq_m:
            raise IndexBuildError(f"--pq-m must divide the vector dimension {dim}, got {pq_m}")
        if count < 2 ** pq_bits:
            raise IndexBuildError(f"pq_bits {pq_bits} needs at least {2 ** pq_bits} vectors to train, have {count}")
        nprobe = int(given.get("nprobe") or max(1, min(nlist, max(8, nlist // 16))))
        train_size = int(given.get("train_size") or max(65_536, 64 * nlist))
        return {"nlist": nlist, "pq_m": pq_m, "pq_bits": pq_bits, "nprobe": nprobe, "train_size": train_size,
                "trained_on": 0}
    raise IndexBuildError(f"unknown index kind {kind!r}; choose one of {', '.join(KINDS)}")


def merge_params(kind: str, stored: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """An existing index's settings with the search-time ones the caller changed; structural changes refused."""
    merged = dict(stored)
    for key, value in given.items():
        if value is None or stored.get(key) == value:
            continue
        if key in SEARCH_TIME[kind]:
            merged[key] = int(value)
        elif key in STRUCTURAL[kind]:
            raise IndexBuildError(f"the index was built with {key}={stored.get(key)}; changing it to {value} needs a new "
                                  f"index: pass --rebuild")
    return merged


def new_index(kind: str, dim: int, params: dict[str, Any]) -> faiss.Index:
    if kind == "flat":
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    if kind == "hnsw":
        graph = faiss.IndexHNSWFlat(dim, params["hnsw_m"], faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = params["ef_construction"]
        return faiss.IndexIDMap2(graph)
    if kind == "ivfpq":
        quantizer = faiss.IndexFlatIP(dim)
        return faiss.IndexIVFPQ(quantizer, dim, params["nlist"], params["pq_m"], params["pq_bits"], faiss.METRIC_INNER_PRODUCT)
    raise IndexBuildError(f"unknown index kind {kind!r}; choose one of {', '.join(KINDS)}")


def _labels_in(ranges: list[list[int]]) -> np.ndarray:
    return np.concatenate([np.arange(start, end, dtype=np.int64) for start, end in ranges]) if ranges else np.zeros(0, np.int64)


def _selector(ranges: list[list[int]]) -> faiss.IDSelector:
    if len(ranges) == 1:
        return faiss.IDSelectorRange(ranges[0][0], ranges[0][1])
    return faiss.IDSelectorBatch(_labels_in(ranges))


def removes_natively(kind: str) -> bool:
    return kind in ("flat", "ivfpq")


def remove(index: faiss.Index, ranges: list[list[int]]) -> int:
    """Remove every label in the half-open ranges; returns how many vectors went."""
    if not ranges:
        return 0
    return int(index.remove_ids(_selector(ranges)))


def needs_compaction(ntotal: int, tombstoned: int) -> bool:
    return ntotal > 0 and tombstoned / ntotal > COMPACT_RATIO


def compact_hnsw(index: faiss.Index, dim: int, params: dict[str, Any], removed: list[list[int]]) -> faiss.Index:
    """A new graph holding only the live vectors (under their old labels), read back from the old graph."""
    graph = faiss.downcast_index(index.index)
    labels = faiss.vector_to_array(index.id_map).astype(np.int64)
    dead = np.zeros(len(labels), dtype=bool)
    for start, end in removed:
        dead |= (labels >= start) & (labels < end)
    fresh = new_index("hnsw", dim, params)
    for start in range(0, len(labels), COMPACT_CHUNK):
        stop = min(start + COMPACT_CHUNK, len(labels))
        keep = ~dead[start:stop]
        if keep.any():
            vectors = graph.reconstruct_n(start, stop - start)
            fresh.add_with_ids(np.ascontiguousarray(vectors[keep]), labels[start:stop][keep])
    return fresh


def search(index: faiss.Index, kind: str, queries: np.ndarray, k: int, params: dict[str, Any],
           removed: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` (scores, labels) per query, tombstoned labels excluded; label -1 pads short results."""
    selector = faiss.IDSelectorNot(_selector(removed)) if removed else None
    if kind == "hnsw":
        search_params = faiss.SearchParametersHNSW(efSearch=max(int(params.get("ef_search", 128)), k))
    elif kind == "ivfpq":
        search_params = faiss.SearchParametersIVF(nprobe=int(params.get("nprobe", 8)))
    else:
        search_params = faiss.SearchParameters()
    if selector is not None:
        search_params.sel = selector
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    return index.search(queries, k, params=search_params)
