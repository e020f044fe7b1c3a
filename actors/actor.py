"""The embedding actor: a Ray Data callable class that loads the stack once and embeds Arrow batches.

Input rows are reader rows (``actors.rows``); ``doc`` rows are embedded, ``reject`` and ``end``
rows pass through so that the writer sees every row of every unit. Every output row carries
``doc_end`` (true on the last output row of an input row, whatever the granularity) and ``node``
(the Ray node it was embedded on). A document that makes the stack fail becomes a reject
(``embedding_error``), and one without a single token an ``empty_text`` reject; the rest of its
batch is kept.

The actor knows nothing of the job config or the ledger: it receives an ``ActorConfig``.
"""
from __future__ import annotations

import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from actors.rows import PASS_THROUGH, Reason, RowKind

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ActorConfig:
    """What an actor needs: the stack (config-form specs), how to pool, what to output, how to run."""

    stack: list[dict[str, Any]]
    pooling: str | None
    granularity: str
    dtype: str
    keep_text: bool = False
    precision: str = "auto"
    max_batch_tokens: int | None = None
    torch_threads: int | None = None


def vector_array(vectors: list[np.ndarray | None] | np.ndarray, dim: int, dtype: str,
                 missing: np.ndarray | None = None) -> pa.Array:
    """``fixed_size_list<dtype>[dim]`` from per-row vectors (None → null), or from an ``[n, dim]`` matrix.

    With a matrix, ``missing`` (bool per row, optional) marks the null rows and no Python loop runs:
    the matrix's buffer becomes the list's values as it is (one cast at most, for float16).
    """
    np_dtype = np.float16 if dtype == "float16" else np.float32
    if isinstance(vectors, np.ndarray):
        matrix = np.ascontiguousarray(vectors, dtype=np_dtype).reshape(-1, dim)
        mask = missing if missing is not None and missing.any() else None
    else:
        matrix = np.zeros((len(vectors), dim), dtype=np_dtype)
        flags = np.ones(len(vectors), dtype=bool)
        for index, vector in enumerate(vectors):
            if vector is not None:
                matrix[index] = vector
                flags[index] = False
        mask = flags if flags.any() else None
    values = pa.array(matrix.reshape(-1))
    return pa.FixedSizeListArray.from_arrays(values, dim, mask=pa.array(mask) if mask is not None else None)


def token_vectors_array(per_row: list[np.ndarray | None], dim: int, dtype: str) -> pa.Array:
    """``list<fixed_size_list<dtype>[dim]>``: each row's token vectors (None → null)."""
    np_dtype = np.float16 if dtype == "float16" else np.float32
    offsets = [0]
    chunks = []
    mask = []
    for matrix in per_row:
        if matrix is None:
            offsets.append(offsets[-1])
            mask.append(True)
        else:
            chunks.append(np.asarray(matrix, dtype=np_dtype).reshape(-1, dim))
            offsets.append(offsets[-1] + chunks[-1].shape[0])
            mask.append(False)
    flat = np.concatenate(chunks) if chunks else np.zeros((0, dim), np_dtype)
    inner = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), dim)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), inner, mask=pa.array(mask))


def node_name() -> str:
    """``<node id>|<ip>|<actor id>`` of this Ray actor ("local||" outside Ray): the run record's ``nodes``."""
    try:
        import ray

        if ray.is_initialized():
            context = ray.get_runtime_context()
            return f"{context.get_node_id()}|{ray.util.get_node_ip_address()}|{context.get_actor_id() or ''}"
    except Exception:  # noqa: BLE001 - a name for the run record, never a reason to fail
        pass
    return "local||"


class EmbeddingActor:
    """Ray Data actor: ``__init__`` loads the stack once, ``__call__`` embeds one Arrow batch.

    All of the actor's torch work (loading, then every batch) runs on one thread of its own, one
    batch at a time, however many calls Ray makes at once. Ray Data builds the actor on the
    process's main thread but calls it from worker threads; torch work on several gives the
    process several OpenMP thread teams, and GNU OpenMP, seeing more threads than cores, then
    parks its threads after every parallel region instead of spinning: on 2 cores that cost the
    actor a third of its speed in bf16 (1.3 of 2 cores busy) and a sixth in float32, measured in
    ``bench/README.md``.
    """

    def __init__(self, config: ActorConfig):
        self.config = config
        self.node = node_name()
        self._compute = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedding")
        self._compute.submit(self._load).result()

    def _load(self) -> None:
        import torch

        from actors.embedder import TextEmbedder
        from actors.stack.specs import Runtime

        # The driver's choice (on a one-node Ray the actors share all of the node's cores, see
        # pipeline.ray_pipeline.actor_threads); CORPUS_EMBED_TORCH_THREADS overrides it.
        threads = self.config.torch_threads or max(1, math.ceil(torch.get_num_threads()))
        torch.set_num_threads(int(os.environ.get("CORPUS_EMBED_TORCH_THREADS", threads)))
        runtime = Runtime(precision=self.config.precision, max_batch_tokens=self.config.max_batch_tokens)
        self.embedder = TextEmbedder(self.config.stack, self.config.pooling, runtime)
        self.dim = self.embedder.token_dim if self.config.granularity == "token" else self.embedder.dim

    def __call__(self, batch: pa.Table) -> pa.Table:
        return self._compute.submit(self._embed_batch, batch).result()

    def _embed_batch(self, batch: pa.Table) -> pa.Table:
        columns = {name: batch.column(name).to_pylist() for name in PASS_THROUGH}
        docs = [i for i, kind in enumerate(columns["kind"]) if kind == RowKind.DOC.value]
        texts = batch.column("text").to_pylist()
        results = self._embed_robustly([texts[i] for i in docs], columns, docs)
        if self.config.granularity == "document":
            return self._document_table(columns, texts, results)
        return self._sentence_table(columns, results)

    # -- embedding with per-document fallback ------------------------------------------------
    def _embed(self, texts: list[str]) -> list[Any]:
        if self.config.granularity == "document":
            matrix, counts = self.embedder.embed_documents(texts)
            return [(matrix[i], counts[i]) for i in range(len(texts))]
        return self.embedder.embed_sentences(texts, keep_tokens=self.config.granularity == "token")

    def _embed_robustly(self, texts: list[str], columns: dict[str, list[Any]], docs: list[int]) -> dict[int, Any]:
        try:
            results = dict(zip(docs, self._embed(texts)))
        except Exception:  # noqa: BLE001 - isolate the failing documents, keep the others
            log.warning("batch of %d documents failed; retrying one by one", len(texts), exc_info=True)
            results = {}
            for index, text in zip(docs, texts):
                try:
                    results[index] = self._embed([text])[0]
                except Exception as error:  # noqa: BLE001
                    _reject(columns, index, Reason.EMBEDDING_ERROR, f"{type(error).__name__}: {error}")
        for index in list(results):
            if self._has_no_tokens(results[index]):
                del results[index]
                _reject(columns, index, Reason.EMPTY_TEXT, "no words in the text (flair's tokenizer found none)")
        return results

    def _has_no_tokens(self, result: Any) -> bool:
        if self.config.granularity == "document":
            return not self.embedder.document_level and result[1] == 0
        return not result.sentences

    # -- Arrow output ---------------------------------------------------------------------
    def _document_table(self, columns: dict[str, list[Any]], texts: list[Any], results: dict[int, Any]) -> pa.Table:
        count = len(columns["seq"])
        np_dtype = np.float16 if self.config.dtype == "float16" else np.float32
        matrix = np.zeros((count, self.dim), dtype=np_dtype)
        n_tokens = np.zeros(count, dtype=np.int32)
        missing = np.ones(count, dtype=bool)
        if results:
            rows = np.fromiter(results.keys(), dtype=np.int64, count=len(results))
            matrix[rows] = np.stack([vector for vector, _ in results.values()])
            n_tokens[rows] = np.fromiter((tokens for _, tokens in results.values()), dtype=np.int32, count=len(results))
            missing[rows] = False
        table: dict[str, Any] = {name: columns[name] for name in PASS_THROUGH}
        table["doc_end"] = pa.array(np.ones(count, dtype=bool))
        table["node"] = pa.array([self.node] * count, pa.string())
        if self.config.keep_text:
            table["text"] = pa.array([text if not missing[i] else None for i, text in enumerate(texts)], pa.string())
        table["n_tokens"] = pa.array(n_tokens, mask=missing if missing.any() else None)
        table["vector"] = vector_array(matrix, self.dim, self.config.dtype, missing=missing)
        return pa.table(table)

    def _sentence_table(self, columns: dict[str, list[Any]], results: dict[int, Any]) -> pa.Table:
        out: dict[str, list[Any]] = {name: [] for name in (*PASS_THROUGH, "doc_end", "sentence", "text", "tokens", "n_tokens")}
        vectors: list[np.ndarray | None] = []
        for index in range(len(columns["seq"])):
            result = results.get(index)
            sentences = result.sentences if result is not None else [None]
            for number, sentence in enumerate(sentences):
                for name in PASS_THROUGH:
                    out[name].append(columns[name][index])
                out["doc_end"].append(number == len(sentences) - 1)
                out["sentence"].append(number if result is not None else None)
                out["text"].append(sentence)
                out["tokens"].append(result.tokens[number] if result is not None else None)
                out["n_tokens"].append(len(result.tokens[number]) if result is not None else None)
                vectors.append(result.vectors[number] if result is not None else None)
        table: dict[str, Any] = {name: out[name] for name in (*PASS_THROUGH, "doc_end")}
        table["node"] = pa.array([self.node] * len(out["doc_end"]), pa.string())
        table["sentence"] = pa.array(out["sentence"], pa.int32())
        if self.config.granularity == "sentence":
            table["text"] = pa.array(out["text"], pa.string())
            table["n_tokens"] = pa.array(out["n_tokens"], pa.int32())
            table["vector"] = vector_array(vectors, self.dim, self.config.dtype)
        else:
            table["tokens"] = pa.array(out["tokens"], pa.list_(pa.string()))
            table["n_tokens"] = pa.array(out["n_tokens"], pa.int32())
            table["vectors"] = token_vectors_array(vectors, self.dim, self.config.dtype)
        return pa.table(table)


def _reject(columns: dict[str, list[Any]], index: int, reason: Reason, detail: str) -> None:
    columns["kind"][index] = RowKind.REJECT.value
    columns["reason"][index] = reason.value
    columns["detail"][index] = detail[:500]


