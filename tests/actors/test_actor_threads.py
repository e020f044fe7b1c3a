"""The embedding actor does all of its torch work on one thread of its own.

Ray Data builds an actor on the process's main thread and calls it from a worker thread; torch
work on two threads gives the process two OpenMP teams, which on a small machine makes GNU
OpenMP park its threads after every parallel region (see ``actors.actor.EmbeddingActor``).
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pytest
import torch

from actors.actor import ActorConfig, EmbeddingActor
from actors.rows import READER_SCHEMA

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _batch(texts: list[str]) -> pa.Table:
    n = len(texts)
    return pa.table({"unit": ["u"] * n, "seq": list(range(n)), "row": list(range(n)), "id": [f"d{i}" for i in range(n)],
                     "int_id": [None] * n, "text": texts, "kind": ["doc"] * n, "reason": [None] * n,
                     "detail": [None] * n}, schema=READER_SCHEMA)


def test_loading_and_every_call_run_on_the_actors_own_thread() -> None:
    stack = [{"transformer": {"layers": "-1", "subtoken_pooling": "mean"}}]
    caller_threads = torch.get_num_threads()
    actor = EmbeddingActor(ActorConfig(stack=stack, pooling="mean", granularity="document", dtype="float32",
                                       torch_threads=2))
    assert torch.get_num_threads() == caller_threads, "the caller's torch threads are left alone"

    seen: list[tuple[str, int]] = []
    model = actor.embedder.stack.embeddings[0].model
    hook = model.register_forward_pre_hook(lambda *_: seen.append((threading.current_thread().name, torch.get_num_threads())))
    texts = ["The cat sat on the mat.", "Ray calls actors from a worker thread.", "A third, longer document about banks."]
    try:
        from_main = actor(_batch(texts))
        with ThreadPoolExecutor(1, thread_name_prefix="ray-like") as pool:
            from_pool = pool.submit(actor, _batch(texts)).result()
    finally:
        hook.remove()

    assert seen and {name for name, _ in seen} == {seen[0][0]} and seen[0][0].startswith("embedding")
    assert {threads for _, threads in seen} == {2}
    a = np.asarray(from_main.column("vector").to_pylist(), dtype=np.float32)
    b = np.asarray(from_pool.column("vector").to_pylist(), dtype=np.float32)
    assert a.shape == (3, 384) and np.array_equal(a, b)
