"""``corpus-embed status OUTPUT``: what an output holds and what its runs did, from the ledger alone."""
from __future__ import annotations

import json
from collections import Counter
from typing import Any

from pipeline.config import StorageConfig
from pipeline.ledger import Ledger
from pipeline.layout import RUNS_DIR
from pipeline.storage import filesystem, join


def output_status(output: str, storage: StorageConfig | None = None) -> dict[str, Any]:
    """Units done / pending / failed, rows, rejects and past runs' throughput of one output."""
    fs, root = filesystem(output, storage)
    ledger = Ledger(fs, root)
    committed = ledger.committed()
    records = ledger.read_records(committed)
    runs = _runs(fs, root)
    last = runs[-1] if runs else {}
    failed = [f for f in last.get("units_failed", []) if f["unit"] not in committed]
    pending = [key for key in last.get("pending_units", []) if key not in committed and key not in {f["unit"] for f in failed}]
    reasons: Counter = Counter()
    for record in records:
        reasons.update(record.get("reasons", {}))
    return {
        "output": output,
        "manifest": ledger.manifest(),
        "units_done": len(committed),
        "units_pending": len(pending),
        "units_failed": failed,
        "rows_in": sum(r.get("rows_in", 0) for r in records),
        "rows_out": sum(r.get("rows_out", 0) for r in records),
        "rows_rejected": sum(r.get("rows_rejected", 0) for r in records),
        "rejects_by_reason": dict(reasons),
        "tokens": sum(r.get("tokens", 0) for r in records),
        "runs": [{key: run.get(key) for key in ("run_id", "ok", "units_done", "rows_in", "docs_per_second",
                                                "seconds_total", "error")} for run in runs],
    }


def _runs(fs: Any, root: str) -> list[dict[str, Any]]:
    try:
        paths = sorted(p for p in fs.ls(join(root, RUNS_DIR), detail=False) if p.endswith(".json"))
    except FileNotFoundError:
        return []
    runs = []
    for path in paths:
        with fs.open(path, "rb") as handle:
            runs.append(json.loads(handle.read()))
    return runs


def format_status(status: dict[str, Any]) -> str:
    manifest = status["manifest"] or {}
    lines = [
        f"output {status['output']}",
        f"  stack {manifest.get('stack_fingerprint', '?')}, dim {manifest.get('dim', '?')}, "
        f"{manifest.get('dtype', '?')}, granularity {manifest.get('granularity', '?')}",
        f"  units: {status['units_done']} done, {status['units_pending']} pending, {len(status['units_failed'])} failed",
        f"  rows: {status['rows_in']:,} in, {status['rows_out']:,} out, {status['rows_rejected']:,} rejected; "
        f"tokens {status['tokens']:,}",
    ]
    if status["rejects_by_reason"]:
        lines.append("  rejects: " + ", ".join(f"{k}={v}" for k, v in sorted(status["rejects_by_reason"].items())))
    for failure in status["units_failed"]:
        lines.append(f"  failed: {failure['unit']} ({failure['shard']}): {failure['reason']}")
    for run in status["runs"][-10:]:
        state = "ok" if run["ok"] else f"FAILED {run.get('error') or ''}".strip()
        lines.append(f"  run {run['run_id']}: {run['units_done']} units, {run['rows_in']:,} docs, "
                     f"{(run['docs_per_second'] or 0):.1f} docs/s, {(run['seconds_total'] or 0):.1f} s, {state}")
    return "\n".join(lines)
