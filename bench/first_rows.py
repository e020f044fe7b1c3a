"""When a local `corpus-embed run` stages its first part and commits its first unit, from its launch.

``python -m bench.first_rows [--docs 3000] [--shards 12] [--batch-rows 100 512] [--lever NAME]
[--reps 1]`` writes a corpus of short documents (``bench.corpus.make_short_documents``), then for
each ``batch_rows`` launches the command as a user would (a fresh local Ray every time) and polls
the output every 20 ms: the first staged Parquet part (an actor finished its first batch) and the
first commit record (the driver heard of every row of a unit). The gap between the two is how long
work already done waits before the run counts it; the run record's own ``seconds_to_first_rows``
is printed beside. ``--lever`` (one of ``bench.levers.LEVERS``) launches each run at each of the
lever's two values in turn, set in ``pipeline.ray_pipeline`` before the command's ``main`` runs.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.corpus import make_short_documents, write_shards
from bench.levers import LEVERS

POLL_S = 0.02


def _first(folder: Path, pattern: str) -> bool:
    return folder.exists() and any(folder.rglob(pattern))


def _command(config: Path, setting: tuple[str, object] | None) -> list[str]:
    """``corpus-embed run --quiet CONFIG``, with one ``pipeline.ray_pipeline`` setting changed first."""
    if setting is None:
        return [sys.executable, "-m", "pipeline.cli", "run", "--quiet", str(config)]
    name, value = setting
    code = (f"import sys, pipeline.ray_pipeline as r; r.{name} = {value!r}; from pipeline.cli import main; "
            f"sys.exit(main(['run', '--quiet', {str(config)!r}]))")
    return [sys.executable, "-c", code]


def time_one_run(corpus: Path, output: Path, batch_rows: int,
                 setting: tuple[str, object] | None = None) -> dict[str, float | None]:
    """Launch one run and return seconds from launch to its first staged part, first commit and exit."""
    shutil.rmtree(output, ignore_errors=True)
    config = output.parent / f"job-{batch_rows}.json"
    config.write_text(json.dumps({"input": {"path": str(corpus), "id_field": "id"}, "output": {"path": str(output)},
                                  "resources": {"batch_rows": batch_rows}}))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("RAY_ADDRESS", None)                  # a fresh local Ray, as on a first run
    marks: dict[str, float | None] = {"staged": None, "committed": None}
    launched = time.monotonic()
    process = subprocess.Popen(_command(config, setting), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while process.poll() is None:
        now = time.monotonic() - launched
        if marks["staged"] is None and _first(output / "_staging", "part-*.parquet"):
            marks["staged"] = now
        if marks["committed"] is None and _first(output / "_ledger", "*.json"):
            marks["committed"] = now
        time.sleep(POLL_S)
    marks["exit"] = time.monotonic() - launched
    if process.returncode != 0:
        raise SystemExit(f"corpus-embed run exited {process.returncode}: {process.stderr.read()[-2000:]}")
    record = json.loads(next((output / "_runs").glob("*.json")).read_text())
    marks["seconds_to_first_rows"] = record["seconds_to_first_rows"]
    return marks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=3000)
    parser.add_argument("--shards", type=int, default=12)
    parser.add_argument("--batch-rows", type=int, nargs="+", default=[100, 512])
    parser.add_argument("--lever", choices=sorted(LEVERS), default=None,
                        help="run each launch at both of this lever's values, alternating")
    parser.add_argument("--reps", type=int, default=1)
    args = parser.parse_args()
    settings: list[tuple[str, object] | None] = [None]
    if args.lever is not None:
        name, values = LEVERS[args.lever]
        settings = [(name, value) for value in values]
    with tempfile.TemporaryDirectory(prefix="bench-first-rows-") as work:
        corpus = Path(work) / "corpus"
        write_shards(make_short_documents(args.docs), corpus, args.shards)
        for _ in range(args.reps):
            for batch_rows in args.batch_rows:
                for setting in settings:
                    marks = time_one_run(corpus, Path(work) / "out", batch_rows, setting)
                    shown = ", ".join(f"{name} {value:.1f} s" for name, value in marks.items() if value is not None)
                    label = "" if setting is None else f"{setting[0]} {setting[1]!r}, "
                    print(f"{label}batch_rows {batch_rows}: {shown}", flush=True)


if __name__ == "__main__":
    main()
