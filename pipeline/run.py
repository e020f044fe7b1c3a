"""The run loop: plan → (Ray Data) read → embed → stage → publish → commit, then a run record.

``run`` always does only what is not committed: the first run embeds everything, a rerun after a
crash resumes, and a rerun after the input changed refreshes (new and changed shards embedded,
deleted shards' outputs pruned). Each unit is committed as soon as all its rows are staged, so
a crash loses at most the units in flight.
"""
from __future__ import annotations

import os
import secrets
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from pipeline.config import JobConfig
from pipeline.layout import DATA_DIR, LEDGER_DIR, MANIFEST, REJECTS_DIR, RUNS_DIR, STAGING_DIR
from pipeline.ledger import Ledger
from pipeline.sink import UnitProgress, discard_staging, publish_unit
from pipeline.sources import discover_shards
from pipeline.storage import filesystem, join, remove_tree
from pipeline.units import Unit, plan_units

VERSION = "0.1.0"


@dataclass
class RunSummary:
    run_id: str
    output: str
    units_planned: int = 0
    units_skipped: int = 0          # already committed with the same source fingerprint
    units_done: int = 0
    units_failed: list[dict[str, str]] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    rows_in: int = 0
    rows_out: int = 0
    rows_rejected: int = 0
    rejects_by_reason: dict[str, int] = field(default_factory=dict)
    tokens: int = 0
    seconds_total: float = 0.0
    seconds_to_first_commit: float | None = None
    shards_skipped_unknown_format: list[str] = field(default_factory=list)
    stack_fingerprint: str = ""
    error: str | None = None
    max_reject_ratio: float = 0.0

    @property
    def reject_ratio(self) -> float:
        return self.rows_rejected / self.rows_in if self.rows_in else 0.0

    @property
    def docs_per_second(self) -> float:
        return self.rows_in / self.seconds_total if self.seconds_total else 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and not self.units_failed and self.reject_ratio <= self.max_reject_ratio

    def lines(self) -> list[str]:
        """The human summary printed at the end of a run."""
        lines = [
            f"run {self.run_id} → {self.output}",
            f"  units: {self.units_planned} planned, {self.units_skipped} already committed, "
            f"{self.units_done} committed now, {len(self.units_failed)} failed",
        ]
        if self.units_done or self.rows_in:
            lines.append(
                f"  docs: {self.rows_in:,} read, {self.rows_out:,} rows written, {self.rows_rejected:,} rejected "
                f"({self.reject_ratio:.2%}); tokens: {self.tokens:,}; {self.docs_per_second:.1f} docs/s over "
                f"{self.seconds_total:.1f} s"
            )
        if self.rejects_by_reason:
            lines.append("  rejects by reason: " + ", ".join(f"{k}={v}" for k, v in sorted(self.rejects_by_reason.items())))
        if self.added or self.replaced or self.removed:
            lines.append(f"  refresh: {len(self.added)} added, {len(self.replaced)} replaced, {len(self.removed)} removed")
        for failure in self.units_failed:
            lines.append(f"  FAILED unit {failure['unit']} ({failure['shard']}): {failure['reason']}")
        if self.shards_skipped_unknown_format:
            lines.append(f"  skipped {len(self.shards_skipped_unknown_format)} file(s) of unknown format, e.g. "
                         f"{self.shards_skipped_unknown_format[:3]}")
        if not self.units_done and not self.units_failed and self.error is None and self.units_planned:
            lines.append("  nothing to do: every unit is already committed")
        if self.reject_ratio > self.max_reject_ratio:
            lines.append(f"  FAILED: reject ratio {self.reject_ratio:.2%} > max_reject_ratio {self.max_reject_ratio:.2%} "
                         f"(see {self.output}/_rejects/; raise --max-reject-ratio to accept)")
        if self.error:
            lines.append(f"  FAILED: {self.error}")
        return lines


def _absolute(path: str) -> str:
    """Local paths become absolute: Ray workers may not share the driver's working directory."""
    return path if "://" in path else os.path.abspath(os.path.expanduser(path))


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


class _Progress:
    """One summary line per committed unit, at most every ``interval`` seconds (and at the end)."""

    def __init__(self, total_units: int, total_bytes: int, stream: Any = None, interval: float = 2.0):
        self.total_units, self.total_bytes = total_units, total_bytes
        # Looked up now, not at import: stderr may have been redirected since.
        self.stream, self.interval = stream or sys.stderr, interval
        self.start = time.monotonic()
        self.last = 0.0

    def update(self, summary: RunSummary, bytes_done: int, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < self.interval:
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        eta = ""
        if bytes_done and self.total_bytes:
            remaining = elapsed * (self.total_bytes - bytes_done) / bytes_done
            eta = f", ETA {remaining:,.0f} s"
        print(f"[corpus-embed] units {summary.units_done}/{self.total_units}, docs {summary.rows_in:,} "
              f"({summary.rows_in / elapsed:,.1f}/s), tokens/s {summary.tokens / elapsed:,.0f}, "
              f"rejects {summary.rows_rejected:,}{eta}", file=self.stream, flush=True)


def run(config: JobConfig, *, overwrite: bool = False, prune: bool = True, max_reject_ratio: float | None = None,
        progress: bool = True, on_commit: Callable[[str], None] | None = None) -> RunSummary:
    """Embed whatever of ``config.input`` is not committed in ``config.output``; returns the summary."""
    from actors.stack.fingerprint import stack_fingerprint
    from pipeline.ray_pipeline import ensure_ray

    started = time.monotonic()
    config = config.model_copy(deep=True)
    config.input.path = _absolute(config.input.path)
    config.output.path = _absolute(config.output.path)
    fs, root = filesystem(config.output.path, config.storage)
    ledger = Ledger(fs, root)
    summary = RunSummary(run_id=new_run_id(), output=config.output.path,
                         max_reject_ratio=config.max_reject_ratio if max_reject_ratio is None else max_reject_ratio)

    if overwrite:
        for name in (DATA_DIR, REJECTS_DIR, STAGING_DIR, LEDGER_DIR, RUNS_DIR, MANIFEST):
            remove_tree(fs, join(root, name))

    fingerprint = stack_fingerprint(config.stack_spec(), config.pooling)
    summary.stack_fingerprint = fingerprint
    ledger.claim({"stack_fingerprint": fingerprint, "dtype": config.output.dtype,
                  "granularity": config.output.granularity, "stack": config.stack_spec(),
                  "pooling": config.pooling, "version": VERSION})
    discard_staging(fs, root)

    shards, skipped = discover_shards(config.input, config.storage)
    summary.shards_skipped_unknown_format = skipped
    units = plan_units(shards, config.input, config.storage)
    summary.units_planned = len(units)
    committed = ledger.committed()
    planned_keys = {unit.key for unit in units}
    pending: list[Unit] = []
    for unit in units:
        record = committed.get(unit.key)
        if record is not None and record.source_fingerprint == unit.source_fingerprint:
            summary.units_skipped += 1
            continue
        (summary.replaced if record is not None else summary.added).append(unit.key)
        pending.append(unit)
    if prune:
        for unit_key in sorted(set(committed) - planned_keys):
            for folder in (DATA_DIR, REJECTS_DIR):
                remove_tree(fs, join(root, folder, unit_key))
            ledger.forget(unit_key)
            summary.removed.append(unit_key)

    if pending:
        ensure_ray()
        _execute(config, pending, ledger, fs, root, summary, fingerprint, progress, on_commit, started)
    summary.seconds_total = time.monotonic() - started
    # Also sweeps what a killed earlier run's stragglers may have written since the start.
    discard_staging(fs, root)
    _write_run_record(ledger, config, summary, units, committed_now=ledger.committed())
    return summary


def _execute(config: JobConfig, pending: list[Unit], ledger: Ledger, fs: Any, root: str, summary: RunSummary,
             fingerprint: str, progress: bool, on_commit: Callable[[str], None] | None, started: float) -> None:
    from pipeline.ray_pipeline import build_dataset

    by_key = {unit.key: unit for unit in pending}
    metadata = {"corpus_embed.stack_fingerprint": fingerprint, "corpus_embed.dtype": config.output.dtype,
                "corpus_embed.granularity": config.output.granularity, "corpus_embed.version": VERSION}
    dataset = build_dataset(config, pending, summary.run_id, metadata)
    reporter = _Progress(len(pending), sum(unit.shard.size for unit in pending)) if progress else None
    in_flight: dict[str, UnitProgress] = {}
    bytes_done = 0
    reasons: Counter = Counter()
    try:
        for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
            for record in batch.to_pylist():
                state = in_flight.setdefault(record["unit"], UnitProgress())
                state.add(record)
                if not state.complete:
                    continue
                unit = by_key[record["unit"]]
                del in_flight[record["unit"]]
                if state.reasons.get("unreadable_shard"):
                    remove_tree(fs, join(root, STAGING_DIR, summary.run_id, unit.key))
                    summary.units_failed.append({"unit": unit.key, "shard": unit.shard.key,
                                                 "reason": "shard unreadable (see the reject detail); will retry next run"})
                    continue
                files = publish_unit(fs, root, unit.key, state)
                ledger.commit(unit.key, unit.source_fingerprint, {
                    "shard": unit.shard.key, "shard_url": unit.shard.url, "size": unit.shard.size,
                    "version": unit.shard.version, "row_groups": list(unit.row_groups) if unit.row_groups else None,
                    "rows_in": state.done, "rows_out": state.rows_out, "rows_rejected": state.rejected,
                    "reasons": dict(state.reasons), "tokens": state.tokens, "dim": state.dim, "files": files,
                    "stack_fingerprint": fingerprint, "run_id": summary.run_id,
                })
                if summary.units_done == 0:
                    summary.seconds_to_first_commit = time.monotonic() - started
                    _record_dim(ledger, state.dim)
                summary.units_done += 1
                summary.rows_in += state.done
                summary.rows_out += state.rows_out
                summary.rows_rejected += state.rejected
                summary.tokens += state.tokens
                reasons.update(state.reasons)
                bytes_done += unit.shard.size
                if on_commit is not None:
                    on_commit(unit.key)
                if reporter is not None:
                    reporter.update(summary, bytes_done)
    except Exception as error:  # noqa: BLE001 - the summary and exit code report it; committed units stay
        summary.error = f"{type(error).__name__}: {error}".splitlines()[0][:2000]
    finally:
        summary.rejects_by_reason = dict(reasons)
        discard_staging(fs, root, summary.run_id)
        if reporter is not None and summary.units_done:
            reporter.update(summary, bytes_done, force=True)


def _record_dim(ledger: Ledger, dim: int) -> None:
    manifest = ledger.manifest() or {}
    if dim and manifest.get("dim") != dim:
        manifest["dim"] = dim
        ledger.write_json(MANIFEST, manifest, indent=1)


def _write_run_record(ledger: Ledger, config: JobConfig, summary: RunSummary, units: list[Unit],
                      committed_now: dict[str, Any]) -> None:
    record = asdict(summary)
    record.update({
        "ok": summary.ok,
        "docs_per_second": summary.docs_per_second,
        "reject_ratio": summary.reject_ratio,
        "input": config.input.path,
        "granularity": config.output.granularity,
        "precision": config.resources.precision,
        "planned_units": sorted(unit.key for unit in units),
        "pending_units": sorted(unit.key for unit in units if unit.key not in committed_now),
        "finished_at": time.time(),
    })
    ledger.write_json(f"{RUNS_DIR}/{summary.run_id}.json", record, indent=1)
