"""``corpus-embed status OUTPUT``: what an output holds, what is left to do, and what is running.

Computed from the output and the input, never from a single run's say-so:

- **done** from the ledger (one listing; rows and rejects from the ledger digest plus the records
  committed since, so 100,000 units take seconds, see README);
- **pending** by planning the latest run's recorded config (``_manifest.json``) against the ledger:
  the input is listed, nothing is read per unit; if the input cannot be reached, status says so;
- **failed** from ``_failed/`` (units whose last attempt failed, kept for inspection);
- **running** from the lease (``_lease.json``): the run holding the output, and its heartbeat;
- the latest runs from ``_runs/`` (only the last few records are read).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline.config import JobConfig, StorageConfig
from pipeline.errors import UserError, one_line
from pipeline.layout import FAILED_DIR, RUNS_DIR
from pipeline.lease import read_lease
from pipeline.ledger import Ledger
from pipeline.storage import Folder, storage_errors
from pipeline.units import row_settings, settings_hash

if TYPE_CHECKING:
    from pipeline.run import RunSummary

RUNS_SHOWN = 10


class NoOutputError(UserError):
    """The path holds no corpus-embed output."""


def output_status(output_url: str, storage: StorageConfig | None = None) -> dict[str, Any]:
    """Units done / pending / failed, rows, rejects, the running run and past runs of one output."""
    with storage_errors(output_url, "output", storage):
        output = Folder(output_url, storage)
        ledger = Ledger(output)
        manifest = ledger.manifest()
        committed = ledger.committed()
        if manifest is None and not committed:
            raise NoOutputError(f"{output_url!r} holds no corpus-embed output (no _manifest.json, no _ledger/)")
        totals = ledger.totals(list(committed.values()))
        holder, _ = read_lease(output)
        failed = _failed(output)
        runs = _latest_runs(output)
    pending, pending_note = _pending(manifest, committed, storage)
    last = runs[-1] if runs else None
    return {
        "output": output.url,
        "manifest": manifest.to_json() if manifest else None,
        "units_done": len(committed),
        "units_pending": pending,
        "pending_note": pending_note,
        "units_failed": failed,
        "rows_in": totals.rows_in,
        "rows_out": totals.rows_out,
        "rows_rejected": totals.rows_rejected,
        "rejects_by_reason": dict(totals.reasons),
        "tokens": totals.tokens,
        "precision": dict(totals.precision),
        "running": None if holder is None else {**holder.__dict__, "age_s": holder.age(),
                                                "live": holder.live(_lease_timeout(manifest))},
        "nodes": last.nodes if last else {},
        "runs": [{"run_id": run.run_id, "ok": run.ok, "units_done": run.units_done, "rows_in": run.rows_in,
                  "docs_per_second": run.docs_per_second, "seconds_total": run.seconds_total, "error": run.error,
                  "units_failed": len(run.units_failed)} for run in runs],
    }


def _pending(manifest: Any, committed: dict[str, Any], storage: StorageConfig | None) -> tuple[int | None, str]:
    """Units of the recorded input not committed under the recorded settings (listing only)."""
    from pipeline.plan import unit_state
    from pipeline.sources import discover_shards
    from pipeline.units import plan_units

    if manifest is None or not manifest.config:
        return None, "no run has recorded its config yet"
    config = JobConfig.model_validate(manifest.config)
    settings = settings_hash(row_settings(config, manifest.stack_fingerprint))
    try:
        with storage_errors(config.input.path, "input.path", config.storage):
            shards, _ = discover_shards(config.input, config.storage)
            units = plan_units(shards, config.input, config.storage)
    except Exception as error:  # noqa: BLE001 - status reports what it cannot see
        return None, f"the input {config.input.path!r} cannot be listed: {one_line(error, 300)}"
    return sum(unit_state(unit, committed.get(unit.key), settings) != "done" for unit in units), f"planned from {config.input.path}"


def _lease_timeout(manifest: Any) -> float:
    if manifest is not None and manifest.config:
        return float(manifest.config.get("lease_timeout_s") or 0)
    return 0.0


def _failed(output: Folder) -> list[dict[str, Any]]:
    failures = []
    for unit in output.listdir(FAILED_DIR):
        data = output.read_json(f"{FAILED_DIR}/{unit}/failure.json") or {"unit": unit, "shard": "?", "reason": "?"}
        failures.append(data)
    return failures


def _latest_runs(output: Folder) -> list[RunSummary]:
    from pipeline.run import RunSummary  # noqa: F811 - the run loop's module, imported only when needed

    names = [name for name in output.listdir(RUNS_DIR) if name.endswith(".json")]
    records = (output.read_json(f"{RUNS_DIR}/{name}") for name in names[-RUNS_SHOWN:])
    return [RunSummary.from_json(record) for record in records if record]


def format_status(status: dict[str, Any]) -> str:
    manifest = status["manifest"] or {}
    pending = status["units_pending"]
    lines = [
        f"output {status['output']}",
        f"  stack {manifest.get('stack_fingerprint', '?')}, dim {manifest.get('dim', '?')}, "
        f"{manifest.get('dtype', '?')}, granularity {manifest.get('granularity', '?')}",
        f"  units: {status['units_done']} done, {'?' if pending is None else pending} pending, "
        f"{len(status['units_failed'])} failed" + (f" (pending: {status['pending_note']})" if pending is None else ""),
        f"  rows: {status['rows_in']:,} in, {status['rows_out']:,} out, {status['rows_rejected']:,} rejected; "
        f"tokens {status['tokens']:,}",
    ]
    if len(status["precision"]) > 1:
        lines.append("  precision: MIXED across units: " + ", ".join(f"{k} {v}" for k, v in sorted(status["precision"].items())))
    if status["rejects_by_reason"]:
        lines.append("  rejects: " + ", ".join(f"{k}={v}" for k, v in sorted(status["rejects_by_reason"].items())))
    running = status["running"]
    if running and running["live"]:
        lines.append(f"  RUNNING: run {running['run_id']} on {running['host']} (pid {running['pid']}), "
                     f"last heartbeat {running['age_s']:.0f} s ago")
    elif running:
        lines.append(f"  not running: run {running['run_id']} on {running['host']} (pid {running['pid']}) left a "
                     f"stale lease (heartbeat {running['age_s']:.0f} s ago, or its process is gone); the next run "
                     f"takes it over")
    for failure in status["units_failed"][:10]:
        lines.append(f"  failed: {failure['unit']} ({failure.get('shard', '?')}): {failure.get('reason', '?')}")
    if status["nodes"]:
        lines.append("  last run's nodes: " + ", ".join(f"{node[:12]} ({info.get('ip')}): {info.get('rows', 0):,} rows, "
                                                      f"{len(info.get('actors', []))} actor(s)"
                                                      for node, info in sorted(status["nodes"].items())))
    for run in status["runs"]:
        state = "ok" if run["ok"] else f"FAILED {run.get('error') or ''}".strip()
        lines.append(f"  run {run['run_id']}: {run['units_done']} units, {run['rows_in']:,} docs, "
                     f"{run['docs_per_second']:.1f} docs/s, {run['seconds_total']:.1f} s, {state}")
    return "\n".join(lines)


def duplicate_ids(output_url: str, storage: StorageConfig | None = None, examples: int = 5) -> dict[str, Any]:
    """Ids that occur more than once across the output's committed rows (``status --check``).

    Within a shard a duplicate id is rejected at read time; across shards both rows are kept
    (each shard is its own unit), so this check reads every data file's id column once.
    """
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    from pipeline.layout import DATA_DIR

    output = Folder(output_url, storage)
    if not output.exists(DATA_DIR):
        return {"rows": 0, "duplicate_ids": 0, "examples": []}
    columns = ["id"] + (["sentence"] if (Ledger(output).manifest() or _NoManifest).granularity != "document" else [])
    table = ds.dataset(output.path(DATA_DIR), filesystem=output.fs, format="parquet").to_table(columns=columns)
    keys = table.column("id") if len(columns) == 1 else pc.binary_join_element_wise(
        pc.cast(table.column("id"), "string"), pc.cast(table.column("sentence"), "string"), "#")
    counts = pc.value_counts(keys)
    repeated = counts.filter(pc.greater(counts.field("counts"), 1))
    return {"rows": table.num_rows, "duplicate_ids": len(repeated),
            "examples": [{"id": item["values"], "count": item["counts"]} for item in repeated.to_pylist()[:examples]]}


class _NoManifest:
    granularity = "document"
