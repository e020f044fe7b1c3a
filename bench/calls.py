"""Calls per actor, 1 against 2: throughput and first rows on the many-short-documents job.

``python -m bench.calls [--docs 12000] [--shards 12] [--reps 3]`` runs ``corpus-embed run`` (through
``bench.runs.pipeline_run``, defaults otherwise: 1 actor, ``batch_rows`` 512) with
``pipeline.ray_pipeline.CALLS_PER_ACTOR`` set to 1 and to 2, alternating, on one local Ray, and
prints one JSON line per run. Two calls let an actor write one batch while it embeds the next,
but its two tasks then take turns on its one compute thread, which delays the first records;
this measures both sides of that trade.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import pipeline.ray_pipeline as ray_pipeline
from bench.corpus import make_short_documents, write_shards
from bench.runs import pipeline_run, start_ray, stop_ray

FIELDS = ("steady_docs_per_s", "overall_docs_per_s", "seconds_total", "seconds_to_first_rows", "seconds_to_first_commit")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=12000)
    parser.add_argument("--shards", type=int, default=12)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-calls-") as work:
        corpus = Path(work) / "corpus"
        write_shards(make_short_documents(args.docs), corpus, args.shards)
        start_ray()
        try:
            for rep in range(args.reps):
                for calls in (1, 2):
                    ray_pipeline.CALLS_PER_ACTOR = calls
                    result = pipeline_run(f"calls-{calls}-{rep}", corpus, Path(work) / f"out-{calls}-{rep}", {},
                                          sample_cpu=False, skip_share=0.25)
                    shown = {name: round(result[name], 2) if result[name] is not None else None for name in FIELDS}
                    print(json.dumps({"calls_per_actor": calls, "rep": rep, **shown}), flush=True)
        finally:
            stop_ray()


if __name__ == "__main__":
    main()
