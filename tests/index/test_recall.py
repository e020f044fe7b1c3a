"""Recall@10 of the approximate kinds against exact search, on 20,000 clustered vectors (dim 64).

Everything goes through the real path: Parquet output with a ledger → ``build_index`` → ``IndexReader``.
"""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.index import IndexReader, build_index
from tests.index.fake_output import FakeOutput, clustered_vectors

N, DIM, UNITS, QUERIES, K = 20_000, 64, 8, 200, 10


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[FakeOutput, np.ndarray]:
    output = FakeOutput(tmp_path_factory.mktemp("recall") / "out", DIM)
    vectors = clustered_vectors(N, DIM, seed=7)
    per_unit = N // UNITS
    for unit in range(UNITS):
        rows = slice(unit * per_unit, (unit + 1) * per_unit)
        output.commit(f"shard-{unit:02d}", [f"doc-{i}" for i in range(rows.start, rows.stop)], vectors[rows], parts=2)
    return output, clustered_vectors(QUERIES, DIM, seed=99)


def _exact_top_k(output: FakeOutput, queries: np.ndarray) -> list[set[str]]:
    ids, vectors = output.current_vectors()
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    order = np.argsort(-(queries @ vectors.T), axis=1)[:, :K]
    return [{ids[i] for i in row} for row in order]


def _recall(reader: IndexReader, queries: np.ndarray, truth: list[set[str]]) -> float:
    hits = reader.search_vectors(queries, K)
    return float(np.mean([len({hit.id for hit in found} & expected) / K for found, expected in zip(hits, truth)]))


@pytest.mark.parametrize("kind, floor", [("flat", 0.999), ("hnsw", 0.95), ("ivfpq", 0.70)])
def test_recall_at_10_against_exact(corpus, tmp_path, kind: str, floor: float) -> None:
    output, queries = corpus
    summary = build_index(output.url, str(tmp_path / kind), kind)
    assert (summary.count, len(summary.units_added)) == (N, UNITS)
    reader = IndexReader(str(tmp_path / kind))
    recall = _recall(reader, queries, _exact_top_k(output, queries))
    print(f"\nrecall@{K} {kind}: {recall:.4f} over {QUERIES} queries, {N:,} vectors of dim {DIM} "
          f"(settings {reader.meta.params})")
    assert recall >= floor, f"{kind} recall@{K} {recall:.4f} < {floor}"
    if kind == "hnsw":   # the search width reaches FAISS: a narrow search must lose recall
        narrow = float(np.mean([len({hit.id for hit in found} & expected) / K for found, expected in
                                zip(reader.search_vectors(queries, K, ef_search=10), _exact_top_k(output, queries))]))
        print(f"recall@{K} hnsw at ef_search=10: {narrow:.4f}")
        assert narrow < recall
