"""``corpus-embed search INDEX "query" -k 10``: embed the query with the index's stack, return the nearest rows.

The query must be embedded by the very stack whose vectors the index holds, or the scores mean
nothing. The stack is rebuilt from the spec recorded at build time and its fingerprint (config +
model file bytes) compared with the index's; a different model file, layer choice or pooling is
refused with both fingerprints named, never answered with silently wrong neighbours.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any, Iterator

import faiss
import numpy as np

from pipeline.config import StorageConfig
from pipeline.index import kinds
from pipeline.index.errors import StackMismatchError
from pipeline.index.idmap import LabelLookup, iter_ids, read_rows
from pipeline.index.layout import IndexMeta, require_meta
from pipeline.index.transfer import read_index
from pipeline.index.vectors import normalize
from pipeline.storage import Folder, storage_errors


@dataclass
class Hit:
    rank: int
    id: str | int                # as the output stores it: int64 or string (``IndexMeta.id_type``)
    score: float
    label: int
    unit: str
    sentence: int | None = None
    text: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class IndexReader:
    """A built index opened for searching with vectors (no model needed): metadata, FAISS index, id map."""

    def __init__(self, index: str, storage: StorageConfig | None = None):
        self.url = index
        with storage_errors(index, "index", storage):
            self.folder = Folder(index, storage)
            self.meta: IndexMeta = require_meta(self.folder)
            self.index: faiss.Index = read_index(self.folder, self.meta.index_file)
        self._lookup = LabelLookup(self.meta)

    def search_vectors(self, queries: np.ndarray, k: int = 10, ef_search: int | None = None,
                       nprobe: int | None = None) -> list[list[Hit]]:
        """Top-``k`` hits per query vector (queries are normalised here, like the indexed vectors)."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32)).copy()
        if queries.shape[1] != self.meta.dim:
            raise ValueError(f"query vectors have dim {queries.shape[1]}, the index holds dim {self.meta.dim}")
        params = dict(self.meta.params)
        params.update({key: value for key, value in (("ef_search", ef_search), ("nprobe", nprobe)) if value})
        scores, labels = kinds.search(self.index, self.meta.kind, normalize(queries), k, params, self.meta.removed)
        return self._resolve(scores, labels)

    def _resolve(self, scores: np.ndarray, labels: np.ndarray) -> list[list[Hit]]:
        """Labels → ids, reading each unit's id map once for all the hits that fall in it."""
        wanted: dict[str, set[int]] = defaultdict(set)
        located: dict[int, tuple[str, int]] = {}
        for label in labels.ravel().tolist():
            if label < 0 or label in located:
                continue
            place = self._lookup.unit_of(label)
            if place is not None:
                located[label] = place
                wanted[place[0]].add(place[1])
        rows: dict[tuple[str, int], dict[str, Any]] = {}
        for unit, positions in wanted.items():
            ordered = sorted(positions)
            for position, row in zip(ordered, read_rows(self.folder, self.meta.idmap_path(unit), ordered)):
                rows[(unit, position)] = row
        results = []
        for query_scores, query_labels in zip(scores.tolist(), labels.tolist()):
            hits = []
            for score, label in zip(query_scores, query_labels):
                if label not in located:
                    continue
                row = rows[located[label]]
                if row["label"] != label:
                    raise RuntimeError(f"index {self.url!r} is inconsistent: label {label} maps to a row labelled "
                                       f"{row['label']}; rebuild it with `corpus-embed index build --rebuild`")
                hits.append(Hit(rank=len(hits) + 1, id=row["id"], score=float(score), label=int(label),
                                unit=located[label][0], sentence=row.get("sentence"), text=row.get("text")))
            results.append(hits)
        return results

    def live_ids(self) -> Iterator[str | int]:
        """Every id the index holds, unit by unit (reads the whole id map: for checks and small indexes)."""
        for unit in sorted(self.meta.units):
            for row in iter_ids(self.folder, self.meta.idmap_path(unit)):
                yield row["id"]


class Searcher:
    """An index plus the stack that embeds queries for it, checked to be the stack the index was built with."""

    def __init__(self, index: str, storage: StorageConfig | None = None, device: str | None = None):
        from actors.embedder import TextEmbedder   # torch only on the searching side

        self.reader = IndexReader(index, storage)
        meta = self.reader.meta
        self.embedder = TextEmbedder(meta.stack, meta.pooling, device=device)
        built = self.embedder.fingerprint()
        if built != meta.stack_fingerprint:
            raise StackMismatchError(
                f"index {index!r} holds vectors of stack {meta.stack_fingerprint}, but the stack built here from its "
                f"spec has fingerprint {built}: the model files (or their settings) differ from the ones the vectors "
                f"were made with. Search with the same model files (CORPUS_EMBED_MODEL_MIRROR / cache), or re-embed the "
                f"corpus and rebuild the index with this stack.")

    def embed_query(self, query: str) -> np.ndarray:
        """The query's vector, ``[1, dim]``: the one place a search query is embedded.

        A ``sentence_transformer`` stack whose model declares a "query" prompt (e5, bge) embeds
        queries with it, as ``SentenceTransformer.encode_query`` does; other stacks embed a query
        exactly as they embedded the documents.
        """
        return self.embedder.embed_queries([query])

    def search(self, query: str, k: int = 10, ef_search: int | None = None, nprobe: int | None = None) -> list[Hit]:
        return self.reader.search_vectors(self.embed_query(query), k, ef_search=ef_search, nprobe=nprobe)[0]
