"""The pipeline against a real S3 server on loopback: input and output in s3://, refresh, faults, rejects."""
from __future__ import annotations

import gzip
import io
import json
import os
import signal
import subprocess
import sys
import time

import boto3
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from pipeline.config import parse_config
from pipeline.ledger import Ledger, OutputMismatchError
from pipeline.run import run
from pipeline.storage import Folder
from tests.conftest import TEST_ACCESS_KEY, TEST_SECRET_KEY, demo_documents
from tests.fault_proxy import FaultPlan, FaultProxy

pytestmark = pytest.mark.slow


def _put(endpoint: str, url: str, data: bytes) -> None:
    bucket, _, key = url.removeprefix("s3://").partition("/")
    boto3.client("s3", endpoint_url=endpoint).put_object(Bucket=bucket, Key=key, Body=data)


def _delete(endpoint: str, url: str) -> None:
    bucket, _, key = url.removeprefix("s3://").partition("/")
    boto3.client("s3", endpoint_url=endpoint).delete_object(Bucket=bucket, Key=key)


def _jsonl(docs: list[dict]) -> bytes:
    return "".join(json.dumps(doc) + "\n" for doc in docs).encode()


def _keys(endpoint: str, url: str) -> list[str]:
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    pages = boto3.client("s3", endpoint_url=endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def _output_ids(endpoint: str, url: str) -> list[str]:
    """Read the output back with pyarrow's own S3 client, as a downstream user would."""
    s3 = pafs.S3FileSystem(endpoint_override=endpoint.removeprefix("http://"), scheme="http", region="us-east-1")
    return ds.dataset(url.removeprefix("s3://"), filesystem=s3, format="parquet").to_table(columns=["id"]).column("id").to_pylist()


def _config(bucket: str, endpoint: str, **extra):
    data = {"input": {"path": f"{bucket}/corpus/", "id_field": "id"}, "output": {"path": f"{bucket}/out/"},
            "storage": {"endpoint_url": endpoint}, "resources": {"batch_rows": 16, "read_block_rows": 16}}
    for section, values in extra.items():
        data[section] = {**data.get(section, {}), **values} if isinstance(values, dict) else values
    return parse_config(data)


def _upload_corpus(bucket: str, endpoint: str, docs: list[dict], shards: int = 4) -> list[list[dict]]:
    """Shards: part-000.jsonl.gz, part-001.parquet, then plain JSONL."""
    size = -(-len(docs) // shards)
    chunks = [docs[i * size:(i + 1) * size] for i in range(shards)]
    for index, chunk in enumerate(chunks):
        if index == 0:
            _put(endpoint, f"{bucket}/corpus/part-{index:03d}.jsonl.gz", gzip.compress(_jsonl(chunk), mtime=0))
        elif index == 1:
            sink = io.BytesIO()
            pq.write_table(pa.Table.from_pylist(chunk), sink)
            _put(endpoint, f"{bucket}/corpus/part-{index:03d}.parquet", sink.getvalue())
        else:
            _put(endpoint, f"{bucket}/corpus/part-{index:03d}.jsonl", _jsonl(chunk))
    return chunks


def test_s3_in_and_out_then_refresh(ray_address, s3_endpoint, s3_bucket) -> None:
    docs = demo_documents()[:64]
    chunks = _upload_corpus(s3_bucket, s3_endpoint, docs)
    config = _config(s3_bucket, s3_endpoint)
    first = run(config, progress=False)
    assert first.ok, first.lines()
    assert (first.units_done, first.rows_in, first.rows_out) == (4, 64, 64)
    assert sorted(_output_ids(s3_endpoint, f"{s3_bucket}/out")) == sorted(d["id"] for d in docs)
    keys = _keys(s3_endpoint, f"{s3_bucket}/out/")
    assert not [k for k in keys if "_staging" in k or ".tmp" in k]
    assert all(k.startswith(f"out/{p}") for k in keys for p in [k.split("/")[1]]
               if k.split("/")[1] not in ("data", "_ledger", "_runs", "_manifest.json"))

    output = Folder(config.output.path, config.storage)
    ledger = Ledger(output)
    before = {key: entry.name for key, entry in ledger.committed().items()}
    untouched = [k for k in before if k.startswith("part-003")]
    untouched_record = output.read_bytes(before[untouched[0]])

    # Nightly refresh: one shard added, one changed, one deleted, one untouched.
    new_docs = demo_documents()[100:110]
    _put(s3_endpoint, f"{s3_bucket}/corpus/part-004.jsonl", _jsonl(new_docs))
    changed = chunks[2][:5] + demo_documents()[200:203]
    _put(s3_endpoint, f"{s3_bucket}/corpus/part-002.jsonl", _jsonl(changed))
    _delete(s3_endpoint, f"{s3_bucket}/corpus/part-000.jsonl.gz")

    second = run(config, progress=False)
    assert second.ok, second.lines()
    assert (len(second.added), len(second.replaced), len(second.removed)) == (1, 1, 1)
    assert second.units_skipped == 2 and second.rows_in == len(new_docs) + len(changed)
    expected = chunks[1] + changed + chunks[3] + new_docs
    ids = _output_ids(s3_endpoint, f"{s3_bucket}/out")
    assert sorted(ids) == sorted(d["id"] for d in expected) and len(ids) == len(set(ids))
    assert output.read_bytes(before[untouched[0]]) == untouched_record   # the untouched shard was not redone
    record = output.read_json(f"_runs/{second.run_id}.json")
    assert record["added"] == second.added and record["removed"] == second.removed
    assert record["rows_in"] == second.rows_in and record["seconds_total"] > 0

    other_stack = _config(s3_bucket, s3_endpoint, stack=[{"transformer": {"layers": "-2"}}])
    with pytest.raises(OutputMismatchError) as refused:
        run(other_stack, progress=False)
    assert first.stack_fingerprint in str(refused.value) and "--overwrite" in str(refused.value)


def test_transient_s3_faults_are_retried(ray_address, s3_endpoint, s3_bucket) -> None:
    docs = demo_documents()[:40]
    _upload_corpus(s3_bucket, s3_endpoint, docs)
    plan = FaultPlan(fail_every=5, max_faults=24)
    with FaultProxy(s3_endpoint, plan) as flaky:
        summary = run(_config(s3_bucket, flaky), progress=False)
    assert summary.ok, summary.lines()
    assert plan.injected["503"] > 0 and plan.injected["drop"] > 0
    print(f"faults injected: {plan.injected} over {plan.requests} requests")
    ids = _output_ids(s3_endpoint, f"{s3_bucket}/out")
    assert sorted(ids) == sorted(d["id"] for d in docs)


def test_permanent_error_fails_one_unit_and_the_rest_go_on(ray_address, s3_endpoint, s3_bucket) -> None:
    docs = demo_documents()[:40]
    _upload_corpus(s3_bucket, s3_endpoint, docs)
    plan = FaultPlan(forbidden=("/corpus/part-003.jsonl",))
    with FaultProxy(s3_endpoint, plan) as proxy:
        failed = run(_config(s3_bucket, proxy), progress=False)
    assert not failed.ok and failed.units_done == 3
    assert [f.shard for f in failed.units_failed] == ["part-003.jsonl"]
    assert any("FAILED unit" in line for line in failed.lines())
    retried = run(_config(s3_bucket, s3_endpoint), progress=False)
    assert retried.ok and retried.units_done == 1 and retried.units_skipped == 3
    assert sorted(_output_ids(s3_endpoint, f"{s3_bucket}/out")) == sorted(d["id"] for d in docs)


def test_bad_input_on_s3_is_quarantined(ray_address, s3_endpoint, s3_bucket) -> None:
    good = demo_documents()[:12]
    lines = [json.dumps(d).encode() for d in good[:6]] + [
        b"{broken json", json.dumps({"id": "no-text"}).encode(), json.dumps({"id": "num", "text": 7}).encode(),
        json.dumps({"id": "blank", "text": " \t "}).encode(), b'{"id": "utf", "text": "\xc3\x28"}',
        json.dumps({"id": good[0]["id"], "text": "duplicate"}).encode(),
        json.dumps({"id": "huge", "text": "word " * 200_000}).encode(),
        json.dumps({"id": "long", "text": "many words here, " * 1_200}).encode(),
    ]
    _put(s3_endpoint, f"{s3_bucket}/corpus/mixed.jsonl", b"\n".join(lines) + b"\n")
    whole = gzip.compress(_jsonl(good[6:12] * 40), mtime=0)
    _put(s3_endpoint, f"{s3_bucket}/corpus/cut.jsonl.gz", whole[: len(whole) // 3])
    _put(s3_endpoint, f"{s3_bucket}/corpus/binary.jsonl", bytes(range(256)) * 8)
    sink = io.BytesIO()
    pq.write_table(pa.table({"body": ["x"]}), sink)
    _put(s3_endpoint, f"{s3_bucket}/corpus/notext.parquet", sink.getvalue())

    config = _config(s3_bucket, s3_endpoint)
    strict = run(config, progress=False)
    # Units over max_reject_ratio (5%) are not committed: failed work is not done work.
    # (cut.jsonl.gz repeats six ids 40 times: its duplicates put it over the ratio too.)
    failed = ["binary.jsonl", "cut.jsonl.gz", "mixed.jsonl", "notext.parquet"]
    assert not strict.ok and sorted(f.shard for f in strict.units_failed) == failed and strict.units_done == 0
    lines = "\n".join(strict.lines())
    assert "max_reject_ratio" in lines and "_failed/" in lines
    reasons = strict.rejects_by_reason
    print(f"rejects by reason: {reasons}; rows kept: {strict.rows_out}")
    for reason in ("malformed_json", "missing_text", "not_string", "empty_text", "invalid_utf8", "duplicate_id",
                   "truncated_stream", "missing_column", "too_long"):
        assert reasons.get(reason, 0) >= 1, (reason, reasons)
    s3 = pafs.S3FileSystem(endpoint_override=s3_endpoint.removeprefix("http://"), scheme="http", region="us-east-1")
    bucket = s3_bucket.removeprefix("s3://")
    held_files = [k for k in _keys(s3_endpoint, f"{s3_bucket}/out/_failed/") if k.endswith(".parquet")]
    held = ds.dataset([f"{bucket}/{key}" for key in held_files], filesystem=s3, format="parquet").to_table()
    assert "invalid_utf8" in held.column("reason").to_pylist()        # failed units' rejects stay readable
    assert not _keys(s3_endpoint, f"{s3_bucket}/out/data/")        # nothing of a failed unit is published

    again = run(config, progress=False)      # a cron retry does not report success without the work
    assert not again.ok and len(again.units_failed) == 4 and again.units_done == 0

    accepting = run(config.model_copy(update={"max_reject_ratio": 1.0}), progress=False)
    assert accepting.ok, accepting.lines()
    ids = _output_ids(s3_endpoint, f"{s3_bucket}/out")
    assert set(d["id"] for d in good[:6]) <= set(ids) and "huge" not in ids
    assert "long" in ids   # a 20,400-character text (6,000 words) embeds whole
    assert len(ids) == len(set(ids))
    rejects = ds.dataset(f"{bucket}/out/_rejects", filesystem=s3, format="parquet").to_table()
    assert set(rejects.column_names) >= {"unit", "row", "id", "reason", "detail"}
    assert rejects.num_rows == strict.rows_rejected
    utf = [r for r in rejects.to_pylist() if r["reason"] == "invalid_utf8" and r["unit"].startswith("mixed")][0]
    assert utf["row"] == 10 and "invalid UTF-8" in utf["detail"]
    assert not _keys(s3_endpoint, f"{s3_bucket}/out/_failed/")


def test_credentials_never_reach_logs_records_or_metadata(ray_address, s3_endpoint, s3_bucket, tmp_path) -> None:
    _upload_corpus(s3_bucket, s3_endpoint, demo_documents()[:8], shards=2)
    config_path = tmp_path / "job.yaml"
    config_path.write_text(json.dumps({
        "input": {"path": f"{s3_bucket}/corpus/", "id_field": "id"}, "output": {"path": f"{s3_bucket}/out/"},
        "storage": {"endpoint_url": s3_endpoint}}))
    env = {**os.environ, "RAY_ADDRESS": ray_address, "AWS_ACCESS_KEY_ID": TEST_ACCESS_KEY,
           "AWS_SECRET_ACCESS_KEY": TEST_SECRET_KEY}
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", str(config_path)], env=env,
                          capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    status = subprocess.run([sys.executable, "-m", "pipeline.cli", "status", f"{s3_bucket}/out/", "--endpoint-url",
                             s3_endpoint, "--json"], env=env, capture_output=True, timeout=120)
    written = [done.stdout, done.stderr, status.stdout, status.stderr]
    output = Folder(f"{s3_bucket}/out/", parse_config(json.loads(config_path.read_text())).storage)
    written += [output.read_bytes(path) for path in output.find()]
    assert len(written) > 8
    for blob in written:
        assert TEST_SECRET_KEY.encode() not in blob and TEST_ACCESS_KEY.encode() not in blob


def test_driver_sigkill_several_times_on_s3(ray_address, s3_endpoint, s3_bucket, tmp_path) -> None:
    docs = demo_documents()[:160]
    size = 10
    for index in range(0, len(docs), size):
        _put(s3_endpoint, f"{s3_bucket}/corpus/s{index // size:02d}.jsonl", _jsonl(docs[index:index + size]))
    config_path = tmp_path / "job.yaml"
    config_path.write_text(json.dumps({
        "input": {"path": f"{s3_bucket}/corpus/", "id_field": "id"}, "output": {"path": f"{s3_bucket}/out/"},
        "storage": {"endpoint_url": s3_endpoint}, "resources": {"batch_rows": 10, "read_block_rows": 10}}))
    config = parse_config(json.loads(config_path.read_text()))
    ledger = Ledger(Folder(config.output.path, config.storage))
    env = {**os.environ, "RAY_ADDRESS": ray_address}
    kills = 0
    for wait_for in (1, 4):   # kill after at least this many commits, twice over
        driver = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(config_path)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and driver.poll() is None and len(ledger.committed()) < wait_for:
            time.sleep(0.05)
        if driver.poll() is None:
            os.kill(driver.pid, signal.SIGKILL)
            kills += 1
        driver.wait(timeout=60)
    committed_before = ledger.read(list(ledger.committed().values()))
    assert kills >= 2 and 0 < len(committed_before) < 16
    final = run(config, progress=False)
    assert final.ok, final.lines()
    assert final.rows_in == len(docs) - sum(r.rows_in for r in committed_before)
    ids = _output_ids(s3_endpoint, f"{s3_bucket}/out")
    assert len(ids) == len(set(ids)) == len(docs)
    assert not [k for k in _keys(s3_endpoint, f"{s3_bucket}/out/") if "_staging" in k]


def test_s3_identity_failed_work_and_prune_guard(ray_address, s3_endpoint, s3_bucket) -> None:
    """The trustworthy-run rules hold on object storage as on local disks (ETags as shard versions)."""
    from pipeline.plan import PruneGuardError, RunOptions

    docs = demo_documents()[:32]
    size = 8
    for index in range(4):
        _put(s3_endpoint, f"{s3_bucket}/corpus/part-{index:03d}.jsonl", _jsonl(docs[index * size:(index + 1) * size]))
    wrong = run(_config(s3_bucket, s3_endpoint, input={"text_field": "body"}), progress=False)
    assert not wrong.ok and wrong.units_done == 0 and len(wrong.units_failed) == 4
    fixed = run(_config(s3_bucket, s3_endpoint), progress=False)
    assert fixed.ok and fixed.units_done == 4 and len(fixed.added) == 4

    rewritten = docs[24:32]
    rewritten[0] = {**rewritten[0], "text": rewritten[0]["text"].swapcase()}     # same size, new bytes
    _put(s3_endpoint, f"{s3_bucket}/corpus/part-003.jsonl", _jsonl(rewritten))
    again = run(_config(s3_bucket, s3_endpoint), progress=False)
    assert again.ok and again.replaced_reasons == {"its shard changed": 1} and again.units_skipped == 3

    for index in range(3):
        _delete(s3_endpoint, f"{s3_bucket}/corpus/part-{index:03d}.jsonl")
    with pytest.raises(PruneGuardError, match="would remove 3 of the output's 4 committed units"):
        run(_config(s3_bucket, s3_endpoint), progress=False)
    assert len(_output_ids(s3_endpoint, f"{s3_bucket}/out")) == 32
    pruned = run(_config(s3_bucket, s3_endpoint), RunOptions(max_prune_ratio=1.0), progress=False)
    assert pruned.ok and len(pruned.removed) == 3
    assert sorted(_output_ids(s3_endpoint, f"{s3_bucket}/out")) == sorted(d["id"] for d in rewritten)
