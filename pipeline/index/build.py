"""``corpus-embed index build OUTPUT INDEX``: build a vector index from the output, or bring it up to date.

The output's ledger says which units are committed and under which source fingerprint; the index's
metadata says which of those it holds. A build compares the two, unit by unit (never row by row):

- committed and not indexed, or committed under another fingerprint (the shard changed) → read and add;
- indexed but replaced or no longer committed (the shard was deleted) → remove its label range;
- the same on both sides → untouched, not even read.

So a first build reads everything, a nightly build reads only what the night's run committed, and a
build with nothing new writes nothing. Vectors are streamed one Parquet batch at a time. The FAISS
file is written in a local temporary folder and uploaded under a new name; ``index.json`` is written
last, so a crash at any point leaves the previous index readable, and the next build sweeps leftovers.
One build at a time per index (the nightly job runs them in sequence).
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import faiss
import numpy as np

from pipeline.config import StorageConfig
from pipeline.index import kinds
from pipeline.index.errors import IndexBuildError
from pipeline.index.idmap import IdMapWriter
from pipeline.index.layout import (IDMAP_DIR, IndexMeta, UnitEntry, idmap_path, index_file_name, load_meta,
                                   save_meta)
from pipeline.index.transfer import download, remove_files, upload
from pipeline.index.vectors import sample_rows, stream_unit, unit_files
from pipeline.ledger import Committed, Ledger
from pipeline.storage import filesystem, join


@dataclass
class BuildSummary:
    index: str
    output: str
    kind: str
    fresh: bool = False
    units_added: list[str] = field(default_factory=list)
    units_replaced: list[str] = field(default_factory=list)
    units_removed: list[str] = field(default_factory=list)
    vectors_added: int = 0
    vectors_removed: int = 0
    count: int = 0
    dim: int = 0
    compacted: bool = False
    generation: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.units_added or self.units_replaced or self.units_removed or self.fresh)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "changed": self.changed}

    def lines(self) -> list[str]:
        lines = [f"index {self.index} ({self.kind}{', new' if self.fresh else ''}) from {self.output}"]
        if self.changed:
            lines.append(f"  units: {len(self.units_added)} added, {len(self.units_replaced)} replaced, "
                         f"{len(self.units_removed)} removed; vectors: +{self.vectors_added:,} -{self.vectors_removed:,}"
                         f"{'; graph compacted' if self.compacted else ''}")
        else:
            lines.append("  nothing to do: the index already holds every committed unit")
        lines.append(f"  holds {self.count:,} vectors of dim {self.dim} (generation {self.generation}, {self.seconds:.1f} s)")
        lines.extend(f"  note: {note}" for note in self.notes)
        return lines


@dataclass
class _Plan:
    add: list[str]          # units to read: new ones and replaced ones
    replaced: list[str]     # indexed under an older source fingerprint
    removed: list[str]      # indexed, but no longer committed


def plan_update(indexed: dict[str, UnitEntry], committed: dict[str, Committed]) -> _Plan:
    replaced = sorted(key for key, entry in indexed.items()
                      if key in committed and committed[key].source_fingerprint != entry.source_fingerprint)
    removed = sorted(key for key in indexed if key not in committed)
    add = sorted(key for key, record in committed.items()
                 if key not in indexed or indexed[key].source_fingerprint != record.source_fingerprint)
    return _Plan(add, replaced, removed)


def _output_identity(ledger: Ledger, output: str) -> dict[str, Any]:
    manifest = ledger.manifest()
    if manifest is None:
        raise IndexBuildError(f"{output!r} has no _manifest.json: it is not a corpus-embed output, or nothing has been "
                              f"run into it yet (run `corpus-embed run CONFIG` with output.path={output} first)")
    if manifest.get("granularity") == "token":
        raise IndexBuildError(f"{output!r} has token granularity (one vector per token, grouped by sentence); an index "
                              f"holds one vector per document or sentence: embed with output.granularity=document or sentence")
    return manifest


def _check_compatible(old: IndexMeta, manifest: dict[str, Any], kind: str | None, index: str, output: str) -> None:
    def refuse(what: str) -> IndexBuildError:
        return IndexBuildError(f"index {index!r} {what}; pass --rebuild to replace it with a new index of {output!r}, "
                               f"or choose another INDEX location")

    if old.stack_fingerprint != manifest.get("stack_fingerprint"):
        raise refuse(f"holds vectors of stack {old.stack_fingerprint} but the output's come from stack "
                     f"{manifest.get('stack_fingerprint')}")
    if old.granularity != manifest.get("granularity"):
        raise refuse(f"holds {old.granularity} vectors but the output has {manifest.get('granularity')} granularity")
    if manifest.get("dim") and old.dim != manifest["dim"]:
        raise refuse(f"holds vectors of dim {old.dim} but the output's have dim {manifest['dim']}")
    if kind is not None and kind != old.kind:
        raise refuse(f"is a {old.kind} index, not {kind}")


class _Throttle:
    """At most one progress line every ``interval`` seconds."""

    def __init__(self, log: Callable[[str], None] | None, interval: float = 2.0):
        self.log, self.interval, self.last = log, interval, 0.0

    def __call__(self, message: str, force: bool = False) -> None:
        now = time.monotonic()
        if self.log is not None and (force or now - self.last >= self.interval):
            self.last = now
            self.log(message)


def build_index(output: str, index: str, kind: str | None = None, *, storage: StorageConfig | None = None,
                params: dict[str, Any] | None = None, rebuild: bool = False,
                log: Callable[[str], None] | None = None) -> BuildSummary:
    """Build ``index`` from ``output``'s committed units, or update it incrementally; returns what it did.

    ``kind`` is flat | hnsw | ivfpq (default hnsw for a new index; an existing index keeps its kind).
    ``params`` holds index settings (hnsw_m, ef_construction, ef_search, nlist, nprobe, pq_m); unset ones
    are chosen from the data. ``rebuild`` ignores the existing index and builds a new one in its place.
    """
    started = time.monotonic()
    if kind is not None and kind not in kinds.KINDS:
        raise IndexBuildError(f"unknown index kind {kind!r}; choose one of {', '.join(kinds.KINDS)}")
    given = dict(params or {})
    out_fs, out_root = filesystem(output, storage)
    ledger = Ledger(out_fs, out_root)
    manifest = _output_identity(ledger, output)
    idx_fs, idx_root = filesystem(index, storage)
    existing = load_meta(idx_fs, idx_root)
    old = None if rebuild else existing
    if old is not None:
        _check_compatible(old, manifest, kind, index, output)
    committed = ledger.committed()
    plan = plan_update(old.units if old else {}, committed)
    kind = old.kind if old else (kind or (existing.kind if existing else kinds.DEFAULT_KIND))
    summary = BuildSummary(index=index, output=output, kind=kind, fresh=old is None, units_added=[
        key for key in plan.add if key not in plan.replaced], units_replaced=plan.replaced, units_removed=plan.removed)

    if old is not None and not summary.changed:
        merged = kinds.merge_params(kind, old.params, given)
        if merged != old.params:
            old.params = merged
            save_meta(idx_fs, idx_root, old)
        summary.count, summary.dim, summary.generation = old.count, old.dim, old.generation
        summary.seconds = time.monotonic() - started
        return summary
    if old is None and not committed:
        raise IndexBuildError(f"{output!r} has no committed units: nothing to index (did its run fail? see "
                              f"`corpus-embed status {output}`)")

    records = {record["unit"]: record for record in ledger.read_records({key: committed[key] for key in plan.add})}
    dim = (old.dim if old else 0) or int(manifest.get("dim") or 0) or next(
        (int(r["dim"]) for r in records.values() if r.get("dim")), 0)
    if not dim:
        raise IndexBuildError(f"{output!r}: cannot tell the vector dimension (no dim in _manifest.json or the ledger)")
    incoming = sum(int(records[key].get("rows_out", 0)) for key in plan.add)

    with tempfile.TemporaryDirectory(prefix="corpus-embed-index-") as work:
        if old is not None:
            meta = old
            meta.params = kinds.merge_params(kind, old.params, given)
            local = os.path.join(work, "previous.faiss")
            download(idx_fs, join(idx_root, old.index_file), local)
            faiss_index = faiss.read_index(local)
            os.remove(local)
        else:
            meta = IndexMeta(kind=kind, dim=dim, stack_fingerprint=manifest["stack_fingerprint"],
                             stack=manifest.get("stack", []), pooling=manifest.get("pooling", "mean"),
                             granularity=manifest.get("granularity", "document"), dtype=manifest.get("dtype", "float32"),
                             output="", params=kinds.resolve_params(kind, dim, incoming, given),
                             next_label=existing.next_label if existing else 0,
                             generation=existing.generation if existing else 0)
            faiss_index = kinds.new_index(kind, dim, meta.params)

        _remove_units(faiss_index, meta, plan.replaced + plan.removed, summary)
        if not faiss_index.is_trained:
            _train(faiss_index, meta, out_fs, out_root, plan.add, records, incoming, _Throttle(log))
        progress = _Throttle(log)
        for position, key in enumerate(plan.add, 1):
            entry = _add_unit(faiss_index, meta, out_fs, out_root, idx_fs, idx_root, key, records[key], work)
            meta.units[key] = entry
            summary.vectors_added += entry.count
            progress(f"[index] units {position}/{len(plan.add)}, vectors +{summary.vectors_added:,}")
        if kind == "hnsw" and kinds.needs_compaction(faiss_index.ntotal, meta.tombstoned):
            faiss_index = kinds.compact_hnsw(faiss_index, dim, meta.params, meta.removed)
            meta.removed = []
            summary.compacted = True

        meta.generation += 1
        meta.index_file = index_file_name(meta.generation)
        meta.count = int(faiss_index.ntotal) - meta.tombstoned
        meta.output = output if "://" in output else os.path.abspath(output)
        meta.built_at = time.time()
        local = os.path.join(work, meta.index_file)
        faiss.write_index(faiss_index, local)
        upload(idx_fs, local, join(idx_root, meta.index_file))
    save_meta(idx_fs, idx_root, meta)
    _sweep(idx_fs, idx_root, meta)

    trained_on = meta.params.get("trained_on")
    if kind == "ivfpq" and trained_on and meta.count > 10 * trained_on:
        summary.notes.append(f"the quantizers were trained when the index held {trained_on:,} vectors; it now holds "
                             f"{meta.count:,}: consider --rebuild to retrain them")
    summary.count, summary.dim, summary.generation = meta.count, meta.dim, meta.generation
    summary.seconds = time.monotonic() - started
    return summary


def _remove_units(faiss_index: faiss.Index, meta: IndexMeta, keys: list[str], summary: BuildSummary) -> None:
    ranges = [list(meta.units[key].labels) for key in keys if meta.units[key].count]
    summary.vectors_removed = sum(end - start for start, end in ranges)
    if kinds.removes_natively(meta.kind):
        kinds.remove(faiss_index, ranges)
    else:
        meta.removed.extend(ranges)
    for key in keys:
        del meta.units[key]


def _train(faiss_index: faiss.Index, meta: IndexMeta, fs: Any, root: str, keys: list[str],
           records: dict[str, dict[str, Any]], incoming: int, progress: _Throttle) -> None:
    """Train the quantizers on a seeded random sample of the incoming vectors (a first streaming pass)."""
    rng = np.random.default_rng(0)
    fraction = min(1.0, meta.params["train_size"] / max(incoming, 1))
    samples = []
    for key in keys:
        for batch in stream_unit(fs, unit_files(fs, root, key, records[key]), meta.dim):
            samples.append(sample_rows(batch, fraction, rng))
        progress(f"[index] sampling training vectors: {sum(len(s) for s in samples):,}")
    sample = np.ascontiguousarray(np.concatenate(samples) if samples else np.zeros((0, meta.dim), np.float32))
    needed = max(meta.params["nlist"], 2 ** meta.params["pq_bits"])
    if len(sample) < needed:
        raise IndexBuildError(f"ivfpq needs at least {needed:,} training vectors, the output gave {len(sample):,}; "
                              f"use --kind hnsw or flat, or a smaller --nlist")
    progress(f"[index] training ivfpq quantizers on {len(sample):,} vectors", force=True)
    faiss_index.train(sample)
    meta.params["trained_on"] = incoming


def _add_unit(faiss_index: faiss.Index, meta: IndexMeta, out_fs: Any, out_root: str, idx_fs: Any, idx_root: str,
              key: str, record: dict[str, Any], work: str) -> UnitEntry:
    """Stream one unit into the index under fresh labels and upload its id map; returns its entry."""
    first = meta.next_label
    local = os.path.join(work, "idmap.parquet")
    writer = IdMapWriter(local, first)
    count = 0
    try:
        for batch in stream_unit(out_fs, unit_files(out_fs, out_root, key, record), meta.dim):
            labels = np.arange(first + count, first + count + len(batch.vectors), dtype=np.int64)
            faiss_index.add_with_ids(batch.vectors, labels)
            writer.write(batch.info)
            count += len(batch.vectors)
    finally:
        writer.close()
    upload(idx_fs, local, idmap_path(idx_root, key, first))
    os.remove(local)
    meta.next_label = first + count
    return UnitEntry(source_fingerprint=record["source_fingerprint"], first_label=first, count=count,
                     run_id=record.get("run_id"), committed_at=record.get("committed_at"))


def _sweep(fs: Any, root: str, meta: IndexMeta) -> None:
    """Delete files no longer referenced by ``index.json``: old generations, removed units' id maps, crash leftovers."""
    keep = {join(root, meta.index_file)} | {meta.idmap_path(root, key) for key in meta.units}
    try:
        idmaps = fs.find(join(root, IDMAP_DIR))
    except FileNotFoundError:
        idmaps = []
    try:
        top = fs.ls(root, detail=False)
    except FileNotFoundError:
        top = []
    stale = [path for path in idmaps if path.endswith(".parquet") and path not in keep]
    stale += [path for path in top if os.path.basename(path).startswith("index-") and path.endswith(".faiss")
              and path not in keep]
    remove_files(fs, stale)
