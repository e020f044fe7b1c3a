"""``corpus-embed index build OUTPUT INDEX``: build a vector index from the output, or bring it up to date.

The output's ledger says which units are committed and under which identity (the source fingerprint
of their shard span and the hash of the settings that shaped their rows); the index's metadata says
which of those it holds. A build compares the two, unit by unit (never row by row), from one listing
of the ledger:

- committed and not indexed, or committed under another identity (shard or settings changed) → read and add;
- indexed but replaced or no longer committed (the shard was deleted) → remove its label range;
- the same on both sides → untouched, not even read.

So a first build reads everything, a nightly build reads only what the night's run committed, and a
build with nothing new writes nothing. Vectors are streamed one Parquet batch at a time. The FAISS
file and the id maps are published under new names (``Folder.writing``); ``index.json`` is written
last, so a crash at any point leaves the previous index readable, and the next build sweeps leftovers.
One build at a time per index (the nightly job runs them in sequence).
"""
from __future__ import annotations

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
                                   save_meta, unit_identity)
from pipeline.index.transfer import read_index, write_index
from pipeline.index.vectors import sample_rows, stream_unit, unit_files
from pipeline.ledger import Committed, CommitRecord, Ledger, Manifest
from pipeline.storage import TEMP_PREFIX, Folder, storage_errors


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
    replaced: list[str]     # indexed under an older identity (shard or settings changed)
    removed: list[str]      # indexed, but no longer committed


def plan_update(indexed: dict[str, UnitEntry], committed: dict[str, Committed]) -> _Plan:
    current = {key: unit_identity(entry) for key, entry in committed.items()}
    replaced = sorted(key for key, entry in indexed.items() if key in current and current[key] != entry.identity)
    removed = sorted(key for key in indexed if key not in current)
    add = sorted(key for key, identity in current.items() if key not in indexed or indexed[key].identity != identity)
    return _Plan(add, replaced, removed)


def _output_manifest(ledger: Ledger, output: str) -> Manifest:
    manifest = ledger.manifest()
    if manifest is None:
        raise IndexBuildError(f"{output!r} has no _manifest.json: it is not a corpus-embed output, or nothing has been "
                              f"run into it yet (run `corpus-embed run CONFIG` with output.path={output} first)")
    if manifest.granularity == "token":
        raise IndexBuildError(f"{output!r} has token granularity (one vector per token, grouped by sentence); an index "
                              f"holds one vector per document or sentence: embed with output.granularity=document or sentence")
    return manifest


def _check_compatible(old: IndexMeta, manifest: Manifest, kind: str | None, index: str, output: str) -> None:
    def refuse(what: str) -> IndexBuildError:
        return IndexBuildError(f"index {index!r} {what}; pass --rebuild to replace it with a new index of {output!r}, "
                               f"or choose another INDEX location")

    if old.stack_fingerprint != manifest.stack_fingerprint:
        raise refuse(f"holds vectors of stack {old.stack_fingerprint} but the output's come from stack "
                     f"{manifest.stack_fingerprint}")
    if old.granularity != manifest.granularity:
        raise refuse(f"holds {old.granularity} vectors but the output has {manifest.granularity} granularity")
    if manifest.dim and old.dim != manifest.dim:
        raise refuse(f"holds vectors of dim {old.dim} but the output's have dim {manifest.dim}")
    if manifest.id_type and old.id_type and old.id_type != manifest.id_type:
        raise refuse(f"holds {old.id_type} ids but the output's ids are {manifest.id_type}s")
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
    with storage_errors(output, "output", storage):
        out = Folder(output, storage)
        ledger = Ledger(out)
        manifest = _output_manifest(ledger, output)
    with storage_errors(index, "index", storage):
        folder = Folder(index, storage)
        existing = load_meta(folder)
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
            save_meta(folder, old)
        summary.count, summary.dim, summary.generation = old.count, old.dim, old.generation
        summary.seconds = time.monotonic() - started
        return summary
    if old is None and not committed:
        raise IndexBuildError(f"{output!r} has no committed units: nothing to index (did its run fail? see "
                              f"`corpus-embed status {output}`)")

    records = {record.unit: record for record in ledger.read([committed[key] for key in plan.add])}
    lost = [key for key in plan.add if key not in records]
    if lost:
        raise IndexBuildError(f"{output!r}: the ledger records of {len(lost)} unit(s) vanished while reading them "
                              f"(e.g. {lost[0]}); is a run writing the output? Build again once it is done")
    dim = (old.dim if old else 0) or int(manifest.dim or 0) or next((r.dim for r in records.values() if r.dim), 0)
    if not dim:
        raise IndexBuildError(f"{output!r}: cannot tell the vector dimension (no dim in _manifest.json or the ledger)")
    incoming = sum(records[key].rows_out for key in plan.add)

    if old is not None:
        meta = old
        meta.params = kinds.merge_params(kind, old.params, given)
        faiss_index = read_index(folder, old.index_file)
    else:
        meta = IndexMeta(kind=kind, dim=dim, stack_fingerprint=manifest.stack_fingerprint, stack=manifest.stack,
                         pooling=manifest.pooling, granularity=manifest.granularity, dtype=manifest.dtype,
                         output="", params=kinds.resolve_params(kind, dim, incoming, given),
                         id_type=manifest.id_type or None,
                         next_label=existing.next_label if existing else 0,
                         generation=existing.generation if existing else 0)
        faiss_index = kinds.new_index(kind, dim, meta.params)

    _remove_units(faiss_index, meta, plan.replaced + plan.removed, summary)
    if not faiss_index.is_trained:
        _train(faiss_index, meta, out, plan.add, records, incoming, _Throttle(log))
    progress = _Throttle(log)
    for position, key in enumerate(plan.add, 1):
        entry = _add_unit(faiss_index, meta, out, folder, key, records[key])
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
    meta.output = out.url
    meta.built_at = time.time()
    write_index(folder, faiss_index, meta.index_file)
    save_meta(folder, meta)
    _sweep(folder, meta)

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


def _train(faiss_index: faiss.Index, meta: IndexMeta, output: Folder, keys: list[str],
           records: dict[str, CommitRecord], incoming: int, progress: _Throttle) -> None:
    """Train the quantizers on a seeded random sample of the incoming vectors (a first streaming pass)."""
    rng = np.random.default_rng(0)
    fraction = min(1.0, meta.params["train_size"] / max(incoming, 1))
    samples = []
    for key in keys:
        for batch in stream_unit(output, unit_files(key, records[key]), meta.dim):
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


def _add_unit(faiss_index: faiss.Index, meta: IndexMeta, output: Folder, folder: Folder, key: str,
              record: CommitRecord) -> UnitEntry:
    """Stream one unit into the index under fresh labels and publish its id map; returns its entry."""
    first = meta.next_label
    count = 0
    with folder.writing(idmap_path(key, first)) as local:
        writer = IdMapWriter(local, first, meta.id_type, where=f"unit {key} of {output.url}")
        try:
            for batch in stream_unit(output, unit_files(key, record), meta.dim):
                labels = np.arange(first + count, first + count + len(batch.vectors), dtype=np.int64)
                faiss_index.add_with_ids(batch.vectors, labels)
                writer.write(batch.info)
                count += len(batch.vectors)
        finally:
            writer.close()
    meta.id_type = writer.id_type
    meta.next_label = first + count
    return UnitEntry(identity=unit_identity(record), first_label=first, count=count,
                     run_id=record.run_id, committed_at=record.committed_at)


def _sweep(folder: Folder, meta: IndexMeta) -> None:
    """Delete what ``index.json`` does not reference: old generations, removed units' id maps, crash leftovers.

    Leftovers are unreferenced id maps and FAISS files, and hidden ``.tmp-*`` files of a publication a
    crash interrupted (one build at a time per index, so none is in flight now).
    """
    keep = {meta.index_file} | {meta.idmap_path(key) for key in meta.units}

    def leftover(path: str) -> bool:
        return path.rsplit("/", 1)[-1].startswith(TEMP_PREFIX)

    stale = [path for path in folder.find(IDMAP_DIR)
             if path not in keep and (path.endswith(".parquet") or leftover(path))]
    stale += [name for name in folder.listdir()
              if name not in keep and ((name.startswith("index-") and name.endswith(".faiss")) or leftover(name))]
    for path in stale:
        folder.remove(path)
