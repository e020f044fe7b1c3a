"""``python -m jobs.embed_corpus CONFIG [--set key=value ...]``: embed a corpus on the cluster the job runs in.

The entrypoint for ``ray job submit --working-dir . -- python -m jobs.embed_corpus s3://bucket/job.yaml``
and for KubeRay's RayJob. It reads the config from a local path or object storage and runs, which
plans first (nothing is written, and Ray is not joined, before the config, the models, the input
and the output all check out), then joins the cluster (``RAY_ADDRESS``, set by the job submission)
or starts a local Ray, embeds only what is not committed (so resubmitting a failed job resumes it)
and writes the run record under ``OUTPUT/_runs/``. Exit codes: 0 done; 1 the run failed (committed
units are kept); 2 bad config, model, input or output (nothing done). On failure the last line
printed is the reason.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from jobs._common import announce_cluster, fail, failure_reason
from pipeline.config import StorageConfig, load_config
from pipeline.errors import UserError, one_line
from pipeline.plan import RunOptions
from pipeline.run import run

JOB = "embed_corpus"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m jobs.embed_corpus", description=__doc__.split("\n")[0].strip("`"))
    parser.add_argument("config", help="YAML/JSON job config: local path or s3://, gs:// URL")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    parser.add_argument("--overwrite", action="store_true", help="delete the existing output first")
    parser.add_argument("--yes", action="store_true", help="confirm --overwrite (a job cannot be asked)")
    parser.add_argument("--max-prune-ratio", type=float, default=None, help="refuse a refresh that would prune more")
    parser.add_argument("--max-reject-ratio", type=float, default=None, help="fail above this share of rejected rows")
    parser.add_argument("--endpoint-url", default=None,
                        help="object-storage endpoint for reading CONFIG itself (the config's storage section covers the rest)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.add_argument("--verbose", action="store_true", help="Ray's own log lines and progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = RunOptions(overwrite=args.overwrite, max_reject_ratio=args.max_reject_ratio,
                         max_prune_ratio=args.max_prune_ratio)
    try:
        config = load_config(args.config, args.set, StorageConfig(endpoint_url=args.endpoint_url) if args.endpoint_url else None)
        summary = run(config, options, progress=not args.quiet, verbose=args.verbose,
                      on_plan=lambda plan: _confirm(plan, args.yes))
    except UserError as error:
        return fail(JOB, 2, one_line(error, 4000))
    except KeyboardInterrupt:
        return fail(JOB, 130, "interrupted before any work")
    except Exception as error:  # noqa: BLE001 - the job's exit code and last line must say what happened
        return fail(JOB, 1, f"{type(error).__name__}: {one_line(error)}")
    announce_cluster(JOB)
    print("\n".join(summary.lines()), flush=True)
    return 0 if summary.ok else fail(JOB, 1, failure_reason(summary))


def _confirm(plan: object, assume_yes: bool) -> None:
    from pipeline.cli import _confirm_overwrite

    _confirm_overwrite(plan, assume_yes)


if __name__ == "__main__":
    sys.exit(main())
