"""What the job entrypoints share: joining the cluster, and reporting a failure as the last line."""
from __future__ import annotations

import os
import sys
from typing import Any


def connect_ray(job: str) -> str:
    """Join the cluster the job runs in (``RAY_ADDRESS`` is set by ``ray job submit`` and by KubeRay),
    or start a local Ray when there is none; prints and returns where it connected."""
    import ray

    from pipeline.ray_pipeline import ensure_ray

    ensure_ray()
    address = ray.get_runtime_context().gcs_address
    resources = ray.cluster_resources()
    where = "cluster" if os.environ.get("RAY_ADDRESS") else "local Ray"
    shown = ", ".join(f"{key}={resources[key]:g}" for key in ("CPU", "GPU") if key in resources)
    print(f"[{job}] connected to {where} at {address} ({shown or 'no resources reported'})", file=sys.stderr, flush=True)
    return address


def failure_reason(summary: Any) -> str:
    """One line that says why a run is not ok (an error, failed units, or too many rejects)."""
    if summary.error:
        return summary.error
    if summary.units_failed:
        first = summary.units_failed[0]
        more = f" (and {len(summary.units_failed) - 1} more)" if len(summary.units_failed) > 1 else ""
        return f"{len(summary.units_failed)} unit(s) failed, e.g. {first['unit']}: {first['reason']}{more}; rerun to retry them"
    if summary.reject_ratio > summary.max_reject_ratio:
        return (f"reject ratio {summary.reject_ratio:.2%} > max_reject_ratio {summary.max_reject_ratio:.2%} "
                f"(see {summary.output}/_rejects/)")
    return "the run did not complete"


def fail(job: str, code: int, reason: str) -> int:
    """Print the reason as the job's very last line (stdout flushed first) and return the exit code."""
    sys.stdout.flush()
    print(f"{job} FAILED: {reason}", file=sys.stderr, flush=True)
    return code
