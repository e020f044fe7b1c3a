"""``python -m jobs.nightly_refresh CONFIG --index INDEX``: refresh the output, update the index, report in one line.

1. A refresh run: new shards embedded, changed shards re-embedded, deleted shards' outputs removed,
   everything else untouched (``pipeline.run.run`` does only what is not committed).
2. An incremental index update from the output's ledger (``pipeline.index.build_index``). It runs even
   when some units failed: committed units are complete and correct, and the failed ones will be
   picked up by the next night's run and build.
3. One final line on stdout: a JSON object for schedulers (counts, never per-unit lists, so its size
   does not grow with the corpus). Human-readable progress and summaries go to stderr.

Exit codes: 0 all done; 1 the run or the index update failed (see "error"); 2 bad config, or an
output/index that cannot be used as asked.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Sequence

from jobs._common import announce_cluster, failure_reason
from pipeline.config import StorageConfig, load_config
from pipeline.errors import UserError, one_line
from pipeline.index.build import build_index
from pipeline.plan import RunOptions
from pipeline.run import run

JOB = "nightly_refresh"


def build_parser() -> argparse.ArgumentParser:
    from pipeline.index.layout import KINDS

    parser = argparse.ArgumentParser(prog="python -m jobs.nightly_refresh", description=__doc__.split("\n")[0].strip("`"))
    parser.add_argument("config", help="YAML/JSON job config: local path or s3://, gs:// URL")
    parser.add_argument("--index", required=True, help="the index to update (local path or s3://, gs:// URL)")
    parser.add_argument("--kind", choices=KINDS, default=None, help="kind of a new index (default hnsw); an existing one keeps its kind")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    parser.add_argument("--max-reject-ratio", type=float, default=None, help="a unit with more rejected rows is not committed")
    parser.add_argument("--max-prune-ratio", type=float, default=None, help="refuse a refresh that would prune more")
    parser.add_argument("--endpoint-url", default=None, help="object-storage endpoint for reading CONFIG itself")
    return parser


def _run_counts(summary: Any) -> dict[str, Any]:
    return {
        "run_id": summary.run_id, "ok": summary.ok, "units_planned": summary.units_planned,
        "units_skipped": summary.units_skipped, "units_done": summary.units_done, "units_failed": len(summary.units_failed),
        "shards_added": len(summary.added), "shards_replaced": len(summary.replaced), "shards_removed": len(summary.removed),
        "rows_in": summary.rows_in, "rows_out": summary.rows_out, "rows_rejected": summary.rows_rejected,
        "seconds": round(summary.seconds_total, 3),
    }


def _index_counts(build: Any) -> dict[str, Any]:
    return {
        "kind": build.kind, "fresh": build.fresh, "units_added": len(build.units_added),
        "units_replaced": len(build.units_replaced), "units_removed": len(build.units_removed),
        "vectors_added": build.vectors_added, "vectors_removed": build.vectors_removed, "count": build.count,
        "dim": build.dim, "generation": build.generation, "compacted": build.compacted, "seconds": round(build.seconds, 3),
    }


def refresh(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """Run, then index; returns the exit code and the report."""
    report: dict[str, Any] = {"job": JOB, "ok": False, "config": args.config, "index": args.index, "output": None,
                              "run": None, "index_update": None, "error": None}
    options = RunOptions(max_reject_ratio=args.max_reject_ratio, max_prune_ratio=args.max_prune_ratio)
    try:
        config = load_config(args.config, args.set, StorageConfig(endpoint_url=args.endpoint_url) if args.endpoint_url else None)
        report["output"] = config.output.path
        summary = run(config, options, progress=True)
    except UserError as error:
        report["error"] = one_line(error, 4000)
        return 2, report
    except Exception as error:  # noqa: BLE001 - reported in the JSON line and the exit code
        report["error"] = f"run: {type(error).__name__}: {one_line(error)}"
        return 1, report
    announce_cluster(JOB)
    print("\n".join(summary.lines()), file=sys.stderr, flush=True)
    report["run"] = _run_counts(summary)
    code = 0 if summary.ok else 1
    if not summary.ok:
        report["error"] = f"run: {failure_reason(summary)}"
    try:
        build = build_index(config.output.path, args.index, args.kind, storage=config.storage,
                            log=lambda line: print(line, file=sys.stderr, flush=True))
    except UserError as error:
        report["error"] = f"index: {one_line(error, 4000)}"
        return 2, report
    except Exception as error:  # noqa: BLE001
        report["error"] = f"index: {type(error).__name__}: {error}"
        return 1, report
    print("\n".join(build.lines()), file=sys.stderr, flush=True)
    report["index_update"] = _index_counts(build)
    report["ok"] = code == 0
    return code, report


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.monotonic()
    code, report = refresh(args)
    report["seconds"] = round(time.monotonic() - started, 3)
    sys.stderr.flush()
    print(json.dumps(report, sort_keys=True), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
