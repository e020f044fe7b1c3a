"""One pipeline lever off and on, alternating on one local Ray: throughput and first rows.

``python -m bench.levers LEVER [--corpus short|mixed] [--docs N] [--shards 12] [--batch-rows N]
[--dtype float32|bfloat16] [--reps 3]`` runs ``corpus-embed run`` (through ``bench.runs.pipeline_run``,
defaults otherwise: 1 actor, ``batch_rows`` 512) with the lever's setting in
``pipeline.ray_pipeline`` at each of its two values in turn, and prints one JSON line per run.
The levers (``LEVERS``):

- ``calls``: ``CALLS_PER_ACTOR`` 1 against 2. Two calls let an actor write one batch while it
  embeds the next, but its two tasks then take turns on its one compute thread, which delays the
  first records.
- ``length_sort``: ``SORT_BLOCKS_BY_LENGTH`` off against on: each read block sorted by text length
  before the actor's calls are cut from it.
- ``read_tasks``: ``READ_TASKS_PER_ACTOR`` 4 against 1: four is what Ray Data's default ran with one
  actor on 2 cores (every free CPU at ``READ_TASK_CPUS``). Its start-up cost shows only on a fresh
  Ray (read workers are reused here): ``python -m bench.first_rows --lever read_tasks`` measures that.

``--corpus short`` is the many-short-documents job (``make_short_documents``, 12,000 by default);
``mixed`` is sentences, entries and runs of entries (``make_documents``, 1,200 by default), where
lengths vary most.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import pipeline.ray_pipeline as ray_pipeline
from bench.corpus import make_documents, make_short_documents, write_shards
from bench.runs import pipeline_run, start_ray, stop_ray

FIELDS = ("steady_docs_per_s", "overall_docs_per_s", "seconds_total", "seconds_to_first_rows", "seconds_to_first_commit")
LEVERS = {"calls": ("CALLS_PER_ACTOR", (1, 2)), "length_sort": ("SORT_BLOCKS_BY_LENGTH", (False, True)),
          "read_tasks": ("READ_TASKS_PER_ACTOR", (4, 1))}
CORPORA = {"short": (make_short_documents, 12000), "mixed": (make_documents, 1200)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lever", choices=sorted(LEVERS))
    parser.add_argument("--corpus", choices=sorted(CORPORA), default="short")
    parser.add_argument("--docs", type=int, default=None, help="documents (default: 12000 short, 1200 mixed)")
    parser.add_argument("--shards", type=int, default=12)
    parser.add_argument("--batch-rows", type=int, default=None, help="resources.batch_rows (default: the config's)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="bfloat16 runs with resources.precision bfloat16 (autocast), output float32")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    setting, values = LEVERS[args.lever]
    make, default_docs = CORPORA[args.corpus]
    resources: dict = {} if args.batch_rows is None else {"batch_rows": args.batch_rows}
    if args.dtype == "bfloat16":
        resources["precision"] = "bfloat16"
    with tempfile.TemporaryDirectory(prefix="bench-levers-") as work:
        corpus = Path(work) / "corpus"
        write_shards(make(args.docs or default_docs), corpus, args.shards)
        start_ray()
        try:
            for rep in range(args.reps):
                for value in values:
                    setattr(ray_pipeline, setting, value)
                    result = pipeline_run(f"{args.lever}-{value}-{rep}", corpus, Path(work) / f"out-{value}-{rep}",
                                          resources, sample_cpu=False, skip_share=0.25)
                    shown = {name: round(result[name], 2) if result[name] is not None else None for name in FIELDS}
                    print(json.dumps({setting: value, "rep": rep, **shown}), flush=True)
        finally:
            stop_ray()


if __name__ == "__main__":
    main()
