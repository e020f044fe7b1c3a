"""1,000 small shards on S3 plan from listings alone: no per-shard reads, no per-row state."""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest

from pipeline.config import InputConfig, StorageConfig
from pipeline.ledger import CommitRecord, Ledger
from pipeline.sources import discover_shards
from pipeline.storage import Folder
from pipeline.units import Unit, plan_units

pytestmark = pytest.mark.slow


def _record(unit: Unit) -> CommitRecord:
    return CommitRecord(unit=unit.key, source=unit.source_fingerprint, settings="s1", shard=unit.shard.key,
                        shard_url=unit.shard.url, size=unit.shard.size, version=unit.shard.version, row_groups=None,
                        rows_in=3, rows_out=3, rows_rejected=0, reasons={}, tokens=9, dim=4, id_type="string",
                        files=[], stack_fingerprint="f" * 32, precision="auto", run_id="r")


def test_thousand_shards_plan_and_ledger_listing(s3_endpoint, s3_bucket) -> None:
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    bucket = s3_bucket.removeprefix("s3://")

    def put(index: int) -> None:
        body = "".join(json.dumps({"text": f"doc {index}-{row}"}) + "\n" for row in range(3))
        client.put_object(Bucket=bucket, Key=f"corpus/shard-{index:04d}.jsonl", Body=body.encode())

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(1000)))

    storage = StorageConfig(endpoint_url=s3_endpoint)
    config = InputConfig(path=f"{s3_bucket}/corpus/")
    started = time.perf_counter()
    shards, _ = discover_shards(config, storage)
    units = plan_units(shards, config, storage)
    planned = time.perf_counter() - started
    assert len(units) == 1000 and len({u.key for u in units}) == 1000
    assert [s.key for s in shards][:2] == ["shard-0000.jsonl", "shard-0001.jsonl"]

    ledger = Ledger(Folder(f"{s3_bucket}/out", storage))
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda u: ledger.commit(_record(u)), units))
    started = time.perf_counter()
    committed = ledger.committed()
    listed = time.perf_counter() - started
    assert {k: v.source for k, v in committed.items()} == {u.key: u.source_fingerprint for u in units}
    print(f"planned 1000 S3 shards in {planned:.2f} s; listed 1000 ledger records in {listed:.2f} s")
