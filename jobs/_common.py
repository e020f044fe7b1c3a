"""What the job entrypoints share: saying where they ran, and reporting a failure as the last line."""
from __future__ import annotations

import os
import sys
from typing import Any


def announce_cluster(job: str) -> str:
    """Say which Ray the job ran on (joined through ``RAY_ADDRESS``, or a local one); returns its address."""
    import ray

    if not ray.is_initialized():
        return ""
    address = ray.get_runtime_context().gcs_address
    resources = ray.cluster_resources()
    where = "cluster" if os.environ.get("RAY_ADDRESS") else "local Ray"
    shown = ", ".join(f"{key}={resources[key]:g}" for key in ("CPU", "GPU") if key in resources)
    print(f"[{job}] ran on {where} at {address} ({shown or 'no resources reported'})", file=sys.stderr, flush=True)
    return address


def failure_reason(summary: Any) -> str:
    """One line that says why a run is not ok (an error, failed units, or too many rejects)."""
    if summary.error:
        return summary.error
    if summary.units_failed:
        first = summary.units_failed[0]
        more = f" (and {len(summary.units_failed) - 1} more)" if len(summary.units_failed) > 1 else ""
        return f"{len(summary.units_failed)} unit(s) failed, e.g. {first.unit}: {first.reason}{more}; rerun to retry them"
    return "the run did not complete"


def fail(job: str, code: int, reason: str) -> int:
    """Print the reason as the job's very last line (stdout flushed first) and return the exit code."""
    sys.stdout.flush()
    print(f"{job} FAILED: {reason}", file=sys.stderr, flush=True)
    return code
