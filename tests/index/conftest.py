"""Index tests: one FAISS thread, so timings hold on a busy 2-core machine (OpenMP spin-waits badly there)."""
from __future__ import annotations

import faiss
import pytest


@pytest.fixture(autouse=True, scope="session")
def _single_faiss_thread() -> None:
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(previous)
