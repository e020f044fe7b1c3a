"""Vector index over an output's document/sentence vectors: build incrementally, search with the same stack.

Why FAISS (faiss-cpu) and not usearch:

- **All three kinds from one library.** ``flat`` (exact, ``IndexFlatIP``), ``hnsw``
  (``IndexHNSWFlat``) and ``ivfpq`` (``IndexIVFPQ``, trained coarse + product quantizers) are native
  FAISS indexes with one add / remove / search / file API. usearch is an HNSW library: exact search is
  a brute-force helper over an array we would have to keep ourselves, and IVF-PQ does not exist there,
  so ``--kind ivfpq`` would need a second library or a home-grown quantizer.
- **Incremental removal.** Replaced and deleted units are removed by label range: natively for
  ``flat`` and ``ivfpq`` (``remove_ids``). FAISS's HNSW graph cannot delete nodes, so a removed unit's
  labels are tombstoned in the metadata and filtered out at search time with an ``IDSelector``; when
  tombstones pass 20% of the graph it is rebuilt from the vectors it stores (no re-read of the output).
  Native HNSW deletion is usearch's one advantage here; it does not outweigh the missing ivfpq.
- **File format.** Every kind is one binary file (``faiss.write_index``), the same on any machine
  and readable by GPU builds of FAISS. Everything that is ours — stack fingerprint, which labels
  belong to which unit, ids (int64 or string, as the output has them) and text snippets — lives
  beside it as JSON and Parquet, so the FAISS file only ever holds int64 labels.

Layout of an index folder/prefix (local path or object storage)::

    index.json                          metadata: kind, dim, metric, id type, stack fingerprint and spec,
                                        count, the ledger state indexed (unit → identity "<source>-<settings>",
                                        labels), tombstoned label ranges, and the current index file's name
    index-<generation>.faiss            the FAISS index (a new name per build; index.json is the commit)
    idmap/<unit-key>/<first-label>.parquet  label → id (and sentence number, text snippet) for one unit

Every path is relative to the index's ``pipeline.storage.Folder``; ``index.json`` is written with
``Folder.write_atomic``, the large files through ``Folder.writing``.

Similarity is cosine: vectors are L2-normalised on the way in, queries too, and scores are inner
products in [-1, 1].
"""
from __future__ import annotations

from typing import Any

# Names are imported on first use: the CLI's parser imports this package, and FAISS / numpy
# should load only when an index is actually built or searched.
_EXPORTS = {
    "BuildSummary": "pipeline.index.build", "build_index": "pipeline.index.build",
    "Hit": "pipeline.index.search", "IndexReader": "pipeline.index.search", "Searcher": "pipeline.index.search",
    "IndexBuildError": "pipeline.index.errors", "IndexNotFoundError": "pipeline.index.errors",
    "StackMismatchError": "pipeline.index.errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pipeline.index' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)
