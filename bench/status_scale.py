"""How long ``corpus-embed status`` takes on an output of many committed units.

    python -m bench.status_scale [--units 100000] [--keep DIR]

Builds, in a temporary folder, an input of N one-line shards and an output whose ledger commits
every unit (records written as a run writes them, a manifest holding the run's config, a few run
records), then times ``status`` as a user runs it, in a fresh process: once before the ledger
digest exists (every record read) and once after a run has written it (a listing plus one
Parquet file). Pending is computed as status always does: by planning the recorded input
against the ledger.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pipeline.config import parse_config
from pipeline.ledger import CommitRecord, Ledger, Manifest
from pipeline.plan import VERSION
from pipeline.sources import discover_shards
from pipeline.storage import Folder
from pipeline.units import plan_units, row_settings, settings_hash

FINGERPRINT = "0" * 32


def build(root: Path, units: int) -> Path:
    corpus, output = root / "corpus", root / "out"
    corpus.mkdir(parents=True)
    for index in range(units):
        (corpus / f"s{index:06d}.jsonl").write_text(json.dumps({"text": f"document {index}"}) + "\n")
    config = parse_config({"input": {"path": str(corpus)}, "output": {"path": str(output)}})
    shards, _ = discover_shards(config.input)
    planned = plan_units(shards, config.input)
    settings = row_settings(config, FINGERPRINT)
    ledger = Ledger(Folder(str(output)))
    ledger.write_manifest(Manifest(stack_fingerprint=FINGERPRINT, stack=config.stack_config(), pooling=None,
                                   dtype="float32", granularity="document", version=VERSION, dim=384,
                                   id_type="string", settings={settings_hash(settings): settings},
                                   config=config.model_dump(mode="json")))

    def commit(unit) -> None:
        ledger.commit(CommitRecord(unit=unit.key, source=unit.source_fingerprint, settings=settings_hash(settings),
                                   shard=unit.shard.key, shard_url=unit.shard.url, size=unit.shard.size,
                                   version=unit.shard.version, row_groups=None, rows_in=1, rows_out=1,
                                   rows_rejected=0, reasons={}, tokens=3, dim=384, id_type="string",
                                   files=[f"data/{unit.key}/part-00000.parquet"], stack_fingerprint=FINGERPRINT,
                                   precision="auto", run_id="bench"))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(commit, planned))
    for number in range(5):
        Folder(str(output)).write_json(f"_runs/2026010{number}T000000-bench{number}.json",
                                       {"run_id": f"bench{number}", "ok": True, "units_done": units // 5})
    return output


def timed_status(output: Path) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "status", str(output)], capture_output=True,
                          text=True, check=True)
    return time.perf_counter() - started, done.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--units", type=int, default=100_000)
    parser.add_argument("--keep", default=None, help="build under this folder and keep it")
    args = parser.parse_args(argv)
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="status-scale-"))
    started = time.perf_counter()
    output = build(root, args.units)
    print(f"built {args.units:,} committed units in {time.perf_counter() - started:.1f} s under {root}")
    cold, shown = timed_status(output)
    Ledger(Folder(str(output))).refresh_digest()
    warm, _ = timed_status(output)
    print(shown.strip())
    print(f"status, {args.units:,} units, {os.cpu_count()} CPUs: {cold:.1f} s before the ledger digest exists, "
          f"{warm:.1f} s with it (whole process, listing the input and planning it included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
