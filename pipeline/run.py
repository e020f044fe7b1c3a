"""The run: plan, take the output's lease, act (delete, prune, embed, publish, commit), record.

``run`` always does only what is not committed: the first run embeds everything, a rerun after a
crash resumes, and a rerun after the input or the settings changed refreshes (new and changed
units embedded, deleted shards' outputs pruned). Read top to bottom:

1. ``make_plan`` (no side effects): config, stack files, output, input, units, ledger; every user
   mistake stops here with exit 2.
2. On a cluster (``RAY_ADDRESS``), join it and refuse local paths that its nodes cannot share.
3. Take the lease (one writer per output), sweep dead runs' staging and unfinished writes, list
   the ledger again and re-decide (a run may have committed since planning).
4. ``--overwrite`` deletes the output (commit records first); prune removes units whose shards
   left the input; the manifest is written.
5. Embed the pending units on Ray; each unit is published and committed as soon as all its rows
   are staged, unless it failed (an unreadable shard, or more rejects than ``max_reject_ratio``):
   failed work is not committed, so the next run retries it.
6. The run record (``_runs/<run-id>.json``) and the ledger digest; the lease is released.
"""
from __future__ import annotations

import os
import secrets
import socket
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable

from actors.rows import UNIT_FAILING_REASONS
from pipeline.errors import UserError, one_line
from pipeline.lease import Lease, LeaseLostError
from pipeline.layout import DATA_DIR, FAILED_DIR, LEDGER_DIR, OUTPUT_NAMES, REJECTS_DIR, RUNS_DIR
from pipeline.ledger import CommitRecord, Ledger
from pipeline.plan import VERSION, Plan, RunOptions, UnitAction, decide, make_plan
from pipeline.progress import Progress
from pipeline.sink import UnitProgress, discard_dead_writes, discard_staging, keep_failed, publish_unit
from pipeline.storage import is_local_url


class LocalPathOnClusterError(UserError):
    """A local input or output path on a cluster of several nodes, without a shared filesystem."""


@dataclass
class UnitFailure:
    unit: str
    shard: str
    reason: str
    rows_in: int = 0
    rows_rejected: int = 0
    rejects_by_reason: dict[str, int] = field(default_factory=dict)


@dataclass
class RunSummary:
    """What a run did; also its record in ``_runs/<run-id>.json`` (``to_json`` / ``from_json``)."""

    run_id: str
    output: str
    input: str = ""
    host: str = ""
    pid: int = 0
    started_at: float = 0.0
    finished_at: float | None = None
    units_planned: int = 0
    units_skipped: int = 0          # already committed with the same identity
    units_done: int = 0
    units_failed: list[UnitFailure] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    replaced_reasons: dict[str, int] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    overwritten_units: int = 0
    rows_in: int = 0
    rows_out: int = 0
    rows_rejected: int = 0
    rejects_by_reason: dict[str, int] = field(default_factory=dict)
    tokens: int = 0
    seconds_total: float = 0.0
    seconds_to_first_rows: float | None = None
    seconds_to_first_commit: float | None = None
    shards_skipped_unknown_format: list[str] = field(default_factory=list)
    stack_fingerprint: str = ""
    granularity: str = ""
    precision: str = ""
    max_reject_ratio: float = 0.0
    lease_taken_over: str | None = None
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)   # node id -> {"ip", "rows", "actors"}
    error: str | None = None
    version: str = VERSION

    @property
    def ok(self) -> bool:
        return self.error is None and not self.units_failed

    @property
    def reject_ratio(self) -> float:
        return self.rows_rejected / self.rows_in if self.rows_in else 0.0

    @property
    def docs_per_second(self) -> float:
        return self.rows_in / self.seconds_total if self.seconds_total else 0.0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok, "docs_per_second": self.docs_per_second}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunSummary":
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        values.setdefault("run_id", "?")
        values.setdefault("output", "?")
        values["units_failed"] = [UnitFailure(**{k: v for k, v in failure.items() if k in UnitFailure.__dataclass_fields__})
                                  for failure in values.get("units_failed", [])]
        return cls(**values)

    def lines(self) -> list[str]:
        """The human summary printed at the end of a run."""
        lines = [
            f"run {self.run_id} → {self.output}",
            f"  units: {self.units_planned} planned, {self.units_skipped} already committed, "
            f"{self.units_done} committed now, {len(self.units_failed)} failed",
        ]
        if self.lease_taken_over:
            lines.append(f"  took over the lease of {self.lease_taken_over}")
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
        for reason, count in sorted(self.replaced_reasons.items()):
            lines.append(f"    replaced {count}: {reason}")
        if len(self.nodes) > 1:
            lines.append("  nodes: " + ", ".join(f"{node[:12]} ({info['ip']}) {info['rows']:,} rows"
                                                 for node, info in sorted(self.nodes.items())))
        for failure in self.units_failed[:20]:
            counts = ", ".join(f"{k}={v}" for k, v in sorted(failure.rejects_by_reason.items()))
            lines.append(f"  FAILED unit {failure.unit} ({failure.shard}): {failure.reason}"
                         + (f" [rejects: {counts}]" if counts else ""))
        if len(self.units_failed) > 20:
            lines.append(f"  ... and {len(self.units_failed) - 20} more failed units (see {self.output}/{FAILED_DIR}/)")
        if self.shards_skipped_unknown_format:
            lines.append(f"  skipped {len(self.shards_skipped_unknown_format)} file(s) of unknown format, e.g. "
                         f"{self.shards_skipped_unknown_format[:3]}")
        if not self.units_done and not self.units_failed and self.error is None and self.units_planned \
                and not self.added and not self.replaced:
            lines.append("  nothing to do: every unit is already committed")
        if self.units_failed:
            lines.append(f"  failed units are not committed: fix what their reasons say and run again "
                         f"(rejects kept under {self.output}/{FAILED_DIR}/<unit>/; --max-reject-ratio 1 accepts them)")
        if self.error:
            lines.append(f"  FAILED: {self.error}")
        return lines


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def run(config: Any, options: RunOptions = RunOptions(), *, progress: bool = True, verbose: bool = False,
        on_commit: Callable[[str], None] | None = None, on_plan: Callable[[Plan], None] | None = None) -> RunSummary:
    """Embed whatever of ``config.input`` is not committed in ``config.output``; returns the summary.

    Raises ``UserError`` (nothing changed) for a mistake found while planning; everything after
    is reported in the summary (``error``, ``units_failed``), committed units kept.
    """
    started, started_at = time.monotonic(), time.time()
    plan = make_plan(config, options)
    if on_plan is not None:
        on_plan(plan)
    config = plan.config
    if os.environ.get("RAY_ADDRESS"):
        _join_cluster(config, verbose)
    summary = RunSummary(run_id=new_run_id(), output=plan.output.url, input=config.input.path, host=socket.gethostname(),
                         pid=os.getpid(), started_at=started_at, stack_fingerprint=plan.manifest.stack_fingerprint,
                         granularity=config.output.granularity, precision=config.resources.precision,
                         max_reject_ratio=plan.max_reject_ratio, units_planned=len(plan.units),
                         shards_skipped_unknown_format=plan.shards_skipped)
    output, ledger = plan.output, Ledger(plan.output)
    lease_taken_at = time.time()
    lease = Lease(output, summary.run_id, config.lease_timeout_s).acquire()
    try:
        if lease.taken_over is not None:
            summary.lease_taken_over = lease.taken_over.describe()
        discard_dead_writes(output, lease_taken_at)   # dead runs' leftovers: this run holds the lease
        committed = {} if options.overwrite else ledger.committed()
        plan.decision = decide(plan, committed, set(output.listdir(DATA_DIR)) | set(output.listdir(FAILED_DIR)))
        _apply_deletions(plan, ledger, summary)
        ledger.write_manifest(plan.manifest)
        summary.units_skipped = len(plan.decision.skip)
        summary.added = [action.unit.key for action in plan.decision.add]
        summary.replaced = [action.unit.key for action in plan.decision.replace]
        for action in plan.decision.replace:
            summary.replaced_reasons[action.reason] = summary.replaced_reasons.get(action.reason, 0) + 1
        pending = plan.decision.pending
        if pending:
            try:
                _execute(plan, pending, ledger, lease, summary, progress, verbose, on_commit, started)
            except KeyboardInterrupt:
                summary.error = "interrupted (SIGTERM or Ctrl-C); committed units are kept: run again to resume"
        summary.seconds_total = time.monotonic() - started
        summary.finished_at = time.time()
        discard_staging(output)                       # also what a dead run's stragglers wrote since
        ledger.refresh_digest()
        output.write_json(f"{RUNS_DIR}/{summary.run_id}.json", summary.to_json(), indent=1)
    finally:
        lease.release()
    return summary


def _join_cluster(config: Any, verbose: bool) -> None:
    """Join the cluster, and refuse local paths that its nodes would each read and write alone."""
    from pipeline.ray_pipeline import alive_nodes, ensure_ray

    ensure_ray(verbose=verbose)
    if len(alive_nodes()) > 1 and not config.storage.shared_filesystem:
        for name, path in (("input.path", config.input.path), ("output.path", config.output.path)):
            if is_local_url(path):
                raise LocalPathOnClusterError(
                    f"{name} {path!r} is a local path, but the Ray cluster has {len(alive_nodes())} nodes: each "
                    f"would read and write its own disk. Use s3:// or gs://, or set storage.shared_filesystem: "
                    f"true if every node mounts {path!r} (NFS, Lustre)")


def _apply_deletions(plan: Plan, ledger: Ledger, summary: RunSummary) -> None:
    """``--overwrite`` (commit records first), then prune removed units and orphaned folders."""
    output = plan.output
    if plan.options.overwrite:
        summary.overwritten_units = len(plan.committed)
        for name in OUTPUT_NAMES:
            if name == LEDGER_DIR:
                for entry in ledger.committed().values():   # records one by one: readers never see
                    ledger.forget(entry)                     # a unit committed without its data
            output.remove(name)
        return
    for removal in plan.decision.remove:
        ledger.forget(removal.entry)
        for folder in (DATA_DIR, REJECTS_DIR, FAILED_DIR):
            output.remove(f"{folder}/{removal.entry.unit}")
        summary.removed.append(removal.entry.unit)
    for unit in plan.decision.orphans:
        for folder in (DATA_DIR, REJECTS_DIR, FAILED_DIR):
            output.remove(f"{folder}/{unit}")


def _execute(plan: Plan, pending: list[UnitAction], ledger: Ledger, lease: Lease, summary: RunSummary,
             progress: bool, verbose: bool, on_commit: Callable[[str], None] | None, started: float) -> None:
    from pipeline.ray_pipeline import build_dataset, ensure_ray

    config = plan.config
    ensure_ray(verbose=verbose)
    by_key = {action.unit.key: action for action in pending}
    specs = ", ".join(spec.describe() for spec in config.specs)
    metadata = {"corpus_embed.stack_fingerprint": plan.manifest.stack_fingerprint,
                "corpus_embed.stack": specs, "corpus_embed.pooling": config.pooling_description,
                "corpus_embed.dtype": config.output.dtype, "corpus_embed.granularity": config.output.granularity,
                "corpus_embed.version": VERSION, "corpus_embed.run_id": summary.run_id}
    dataset = build_dataset(config, [action.unit for action in pending], plan.output, summary.run_id, metadata, verbose)
    reporter = Progress(len(pending), sum(action.unit.shard.size for action in pending), enabled=progress)
    in_flight: dict[str, UnitProgress] = {}
    try:
        # prefetch_batches=0: the default keeps one block back until the next arrives, so a unit
        # whose rows were all written waited for the next write before it was committed.
        for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None, prefetch_batches=0):
            for record in batch.to_pylist():
                state = in_flight.setdefault(record["unit"], UnitProgress())
                state.add(record)
                reporter.rows(record["rows_done"], record["rejected"], record["tokens"])
                if summary.seconds_to_first_rows is None and record["rows_done"]:
                    summary.seconds_to_first_rows = time.monotonic() - started
                if not state.complete:
                    continue
                del in_flight[record["unit"]]
                action = by_key[record["unit"]]
                committed = _finish_unit(plan, action, state, ledger, lease, summary, started)
                reporter.unit_finished(action.unit.shard.size, state.done, failed=not committed)
                if committed and on_commit is not None:
                    on_commit(action.unit.key)
        for key, state in in_flight.items():
            _fail(plan, by_key[key], state, summary, "its rows did not all come back from the pipeline; it runs again next time")
    except LeaseLostError as error:
        summary.error = str(error)
    except KeyboardInterrupt:
        raise
    except Exception as error:  # noqa: BLE001 - the summary and exit code report it; committed units stay
        summary.error = f"{type(error).__name__}: {one_line(error)}"
    finally:
        reporter.close()


def _finish_unit(plan: Plan, action: UnitAction, state: UnitProgress, ledger: Ledger, lease: Lease,
                 summary: RunSummary, started: float) -> bool:
    """Publish and commit a unit whose rows are all staged, or keep it as failed; True if committed."""
    unit = action.unit
    summary.rows_in += state.done
    summary.rows_rejected += state.rejected
    for reason, count in state.reasons.items():
        summary.rejects_by_reason[reason] = summary.rejects_by_reason.get(reason, 0) + count
    _count_nodes(summary, state)
    failing = sorted(set(state.reasons) & UNIT_FAILING_REASONS)
    manifest = plan.manifest
    id_type = next(iter(state.id_types), None)
    if failing:
        return _fail(plan, action, state, summary, "its shard could not be read (see the reject detail); it is "
                                                   "retried next run")
    if state.reject_ratio > plan.max_reject_ratio:
        return _fail(plan, action, state, summary, f"{state.rejected:,} of {state.done:,} rows rejected "
                                                   f"({state.reject_ratio:.1%} > max_reject_ratio "
                                                   f"{plan.max_reject_ratio:.1%})")
    if id_type and manifest.id_type and id_type != manifest.id_type:
        return _fail(plan, action, state, summary, f"its ids are {id_type}s but this output's ids are "
                                                   f"{manifest.id_type}s; set input.id_type to {manifest.id_type}")
    lease.check()
    files = publish_unit(plan.output, unit.key, state)
    ledger.commit(CommitRecord(
        unit=unit.key, source=unit.source_fingerprint, settings=plan.settings, shard=unit.shard.key,
        shard_url=unit.shard.url, size=unit.shard.size, version=unit.shard.version,
        row_groups=list(unit.row_groups) if unit.row_groups else None, rows_in=state.done, rows_out=state.rows_out,
        rows_rejected=state.rejected, reasons=dict(state.reasons), tokens=state.tokens, dim=state.dim,
        id_type=id_type or "", files=files, stack_fingerprint=manifest.stack_fingerprint,
        precision=plan.config.resources.precision, run_id=summary.run_id,
    ), previous=action.previous)
    if (state.dim and manifest.dim != state.dim) or (id_type and manifest.id_type != id_type):
        manifest.dim = manifest.dim or state.dim
        manifest.id_type = manifest.id_type or id_type
        ledger.write_manifest(manifest)
    if summary.units_done == 0:
        summary.seconds_to_first_commit = time.monotonic() - started
    summary.units_done += 1
    summary.rows_out += state.rows_out
    summary.tokens += state.tokens
    return True


def _fail(plan: Plan, action: UnitAction, state: UnitProgress, summary: RunSummary, reason: str) -> bool:
    failure = UnitFailure(unit=action.unit.key, shard=action.unit.shard.key, reason=reason, rows_in=state.done,
                          rows_rejected=state.rejected, rejects_by_reason=dict(state.reasons))
    keep_failed(plan.output, action.unit.key, state, {**asdict(failure), "run_id": summary.run_id, "failed_at": time.time()})
    summary.units_failed.append(failure)
    return False


def _count_nodes(summary: RunSummary, state: UnitProgress) -> None:
    """Rows per node and the actors that embedded them (``node`` is ``<node id>|<ip>|<actor id>``)."""
    for node, rows in state.nodes.items():
        node_id, ip, actor = (node.split("|") + ["", ""])[:3]
        entry = summary.nodes.setdefault(node_id, {"ip": ip, "rows": 0, "actors": []})
        entry["rows"] += rows
        if actor and actor not in entry["actors"]:
            entry["actors"].append(actor)
