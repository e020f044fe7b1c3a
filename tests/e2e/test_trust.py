"""Trustworthy runs: plan before acting, identity covers every setting that shapes rows, failed work
is not done work, a guard against mass deletion, and every user mistake is one line with exit 2."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.dataset as ds
import pytest
import yaml

from pipeline.cli import main
from pipeline.config import parse_config
from pipeline.ledger import Ledger
from pipeline.plan import PruneGuardError, RunOptions
from pipeline.run import run
from pipeline.storage import Folder
from tests.conftest import demo_documents, output_ids, wait_for, write_shards

pytestmark = pytest.mark.slow
SMALL = {"batch_rows": 16, "read_block_rows": 16}


def _config(tmp_path: Path, **sections) -> dict:
    data = {"input": {"path": str(tmp_path / "corpus"), "id_field": "id"}, "output": {"path": str(tmp_path / "out")},
            "resources": dict(SMALL)}
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values} if isinstance(values, dict) else values
    return data


def _write_config(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(data))
    return path




def _tree(output: Path) -> dict[str, bytes]:
    return {str(p.relative_to(output)): p.read_bytes() for p in sorted(output.rglob("*")) if p.is_file()}


def test_wrong_text_field_commits_nothing_and_the_fix_embeds_everything(ray_address, tmp_path) -> None:
    docs = write_shards(tmp_path / "corpus", demo_documents()[:24], shards=3)
    wrong = run(parse_config(_config(tmp_path, input={"text_field": "body"})), progress=False)
    assert not wrong.ok and wrong.units_done == 0 and len(wrong.units_failed) == 3
    assert all(f.rejects_by_reason == {"missing_text": 8} for f in wrong.units_failed)
    assert "FAILED unit" in "\n".join(wrong.lines()) and output_ids(tmp_path / "out") == []
    assert Ledger(Folder(str(tmp_path / "out"))).committed() == {}

    again = run(parse_config(_config(tmp_path, input={"text_field": "body"})), progress=False)
    assert not again.ok and len(again.units_failed) == 3       # a retry never reports success without the work

    fixed = run(parse_config(_config(tmp_path)), progress=False)
    assert fixed.ok and fixed.units_done == 3 and sorted(output_ids(tmp_path / "out")) == sorted(d["id"] for d in docs)
    assert not (tmp_path / "out" / "_failed").exists()


def test_a_setting_that_shapes_rows_replaces_units_and_says_which(ray_address, tmp_path) -> None:
    docs = write_shards(tmp_path / "corpus", demo_documents()[:16], shards=2)
    first = run(parse_config(_config(tmp_path)), progress=False)
    assert first.ok and first.units_done == 2
    shorter = max(len(d["text"]) for d in docs) - 1
    changed = run(parse_config(_config(tmp_path, input={"max_chars": shorter}), ), RunOptions(max_reject_ratio=1.0),
                  progress=False)
    assert changed.ok and sorted(changed.replaced) == sorted(Ledger(Folder(str(tmp_path / "out"))).committed())
    assert changed.replaced_reasons == {f"settings changed: input.max_chars 200000 → {shorter}": 2}
    assert changed.rejects_by_reason == {"too_long": 1}
    assert sorted(output_ids(tmp_path / "out")) == sorted(d["id"] for d in docs if len(d["text"]) <= shorter)


def test_a_shard_rewritten_with_its_old_size_and_mtime_is_embedded_again(ray_address, tmp_path) -> None:
    docs = [{"id": f"d{i}", "text": f"first version of document number {i}"} for i in range(6)]
    write_shards(tmp_path / "corpus", docs, shards=1)
    shard = tmp_path / "corpus" / "part-000.jsonl"
    assert run(parse_config(_config(tmp_path)), progress=False).ok
    before = shard.stat()
    time.sleep(0.05)
    shard.write_text(shard.read_text().replace("first", "other"))      # same size, new content...
    os.utime(shard, ns=(before.st_atime_ns, before.st_mtime_ns))       # ...and the old mtime, as cp -p leaves it
    assert (shard.stat().st_size, shard.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    again = run(parse_config(_config(tmp_path)), progress=False)
    assert again.ok and len(again.replaced) == 1 and again.replaced_reasons == {"its shard changed": 1}
    table = ds.dataset(str(tmp_path / "out" / "data"), format="parquet").to_table()
    assert table.num_rows == 6


def test_overwrite_with_a_mistyped_input_changes_nothing(ray_address, tmp_path, capsys) -> None:
    write_shards(tmp_path / "corpus", demo_documents()[:8], shards=2)
    data = _config(tmp_path)
    assert run(parse_config(data), progress=False).ok
    before = _tree(tmp_path / "out")
    config_path = _write_config(tmp_path, {**data, "input": {**data["input"], "path": str(tmp_path / "corpsu")}})
    assert main(["run", str(config_path), "--overwrite", "--yes"]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert _tree(tmp_path / "out") == before

    config_path = _write_config(tmp_path, data)
    assert main(["run", str(config_path), "--overwrite"]) == 2      # not a terminal: --yes is required
    err = capsys.readouterr().err
    assert "--overwrite deletes 2 committed unit(s)" in err and "--yes" in err
    assert _tree(tmp_path / "out") == before


def test_a_refresh_that_would_prune_most_units_refuses(ray_address, tmp_path, capsys) -> None:
    docs = write_shards(tmp_path / "corpus", demo_documents()[:20], shards=10)
    data = _config(tmp_path)
    assert run(parse_config(data), progress=False).ok
    for index in range(1, 10):
        (tmp_path / "corpus" / f"part-{index:03d}.jsonl").unlink()
    before = _tree(tmp_path / "out")
    with pytest.raises(PruneGuardError):
        run(parse_config(data), progress=False)
    config_path = _write_config(tmp_path, data)
    assert main(["run", str(config_path)]) == 2
    err = capsys.readouterr().err
    assert "would remove 9 of the output's 10 committed units (90% > max_prune_ratio 50%)" in err
    assert "--max-prune-ratio 1" in err and _tree(tmp_path / "out") == before
    pruned = run(parse_config(data), RunOptions(max_prune_ratio=1.0), progress=False)
    assert pruned.ok and len(pruned.removed) == 9
    assert sorted(output_ids(tmp_path / "out")) == sorted(d["id"] for d in docs[:2])


@pytest.mark.parametrize("mistake, expected", [
    ({"stack": [{"transformer": {"model": "no-such-org/no-such-model"}}]}, "stack.0.transformer: transformer model 'no-such-org/no-such-model' not found"),
    ({"stack": [{"flair": {"model": "klingon-forward"}}]}, "stack.0.flair: flair model 'klingon-forward' not found"),
    ({"output": {"path": "FILE"}}, "is a file"),
    ({"input": {"path": "MISSING"}}, "does not exist"),
    ({"input": {"id_type": "integer"}}, "input.id_type"),
])
def test_user_mistakes_exit_2_in_seconds_with_one_line(tmp_path, monkeypatch, capsys, mistake, expected) -> None:
    monkeypatch.setenv("CORPUS_EMBED_CACHE", str(tmp_path / "cache"))
    write_shards(tmp_path / "corpus", demo_documents()[:4], shards=1)
    (tmp_path / "file").write_text("not a folder")
    data = _config(tmp_path)
    for name, values in mistake.items():
        values = {key: {"FILE": str(tmp_path / "file"), "MISSING": str(tmp_path / "nope")}.get(value, value)
                  for key, value in values.items()} if isinstance(values, dict) else values
        data[name] = {**data[name], **values} if isinstance(values, dict) else values
    started = time.monotonic()
    assert main(["run", str(_write_config(tmp_path, data))]) == 2
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    assert expected in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and "\x1b[" not in err
    assert elapsed < 20, f"{elapsed:.1f} s"
    assert not (tmp_path / "out").exists()


def test_object_store_mistakes_exit_2(s3_endpoint, s3_bucket, tmp_path) -> None:
    import boto3

    bucket = s3_bucket.removeprefix("s3://")
    boto3.client("s3", endpoint_url=s3_endpoint).put_object(Bucket=bucket, Key="corpus/a.jsonl", Body=b'{"text": "x"}\n')
    base = {"input": {"path": f"{s3_bucket}/corpus/"}, "output": {"path": f"{s3_bucket}/out/"},
            "storage": {"endpoint_url": s3_endpoint}}
    free = __import__("tests.conftest", fromlist=["free_port"]).free_port()
    cases = [
        ({**base, "output": {"path": "s3://no-such-bucket-here/out/"}}, {}, "bucket 'no-such-bucket-here' does not exist"),
        ({**base, "storage": {"endpoint_url": f"http://127.0.0.1:{free}"}}, {}, f"cannot reach http://127.0.0.1:{free}"),
        (base, {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
                "AWS_CONFIG_FILE": "/nonexistent", "AWS_EC2_METADATA_DISABLED": "true"}, "no credentials for s3://"),
    ]
    for data, env_changes, expected in cases:
        config_path = _write_config(tmp_path, data)
        env = {**os.environ}
        for key, value in env_changes.items():
            env.pop(key, None) if value is None else env.__setitem__(key, value)
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", str(config_path)], env=env,
                              capture_output=True, text=True, timeout=120)
        elapsed = time.monotonic() - started
        assert done.returncode == 2, done.stderr[-2000:]
        assert expected in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "Traceback" not in done.stderr and elapsed < 45, (expected, elapsed)
        print(f"{expected!r}: exit 2 after {elapsed:.1f} s")


def test_a_dead_ray_address_fails_fast_naming_it(tmp_path) -> None:
    from tests.conftest import free_port

    write_shards(tmp_path / "corpus", demo_documents()[:4], shards=1)
    address = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", str(_write_config(tmp_path, _config(tmp_path)))],
                          env={**os.environ, "RAY_ADDRESS": address}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and address in done.stderr and "does not answer" in done.stderr, done.stderr
    assert time.monotonic() - started < 60 and not (tmp_path / "out").exists()


def test_a_stale_cluster_file_does_not_make_a_run_wait(tmp_path) -> None:
    """Ray's default would join the cluster its ``ray_current_cluster`` file names, even a dead one."""
    from tests.conftest import free_port

    import shutil
    import tempfile

    docs = write_shards(tmp_path / "corpus", demo_documents()[:6], shards=1)
    temp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))     # short: Ray's socket paths live under it
    try:
        (temp / "ray").mkdir()
        (temp / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{free_port()}")
        env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
        env["RAY_TMPDIR"] = str(temp)
        done = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", "--quiet",
                               str(_write_config(tmp_path, _config(tmp_path)))], env=env, capture_output=True,
                              text=True, timeout=240)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(output_ids(tmp_path / "out")) == sorted(d["id"] for d in docs)


def _start(config_path: Path, ray_address: str, *extra: str, stderr=subprocess.DEVNULL) -> subprocess.Popen:
    env = {**os.environ, "RAY_ADDRESS": ray_address}
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(config_path), *extra], env=env,
                            stdout=subprocess.PIPE, stderr=stderr, text=True, start_new_session=True)




def test_sigterm_stops_a_run_cleanly_and_the_rerun_finishes(ray_address, tmp_path) -> None:
    docs = write_shards(tmp_path / "corpus", demo_documents()[:120], shards=12)
    config_path = _write_config(tmp_path, _config(tmp_path, resources={"batch_rows": 10, "read_block_rows": 10}))
    ledger = Ledger(Folder(str(tmp_path / "out")))
    driver = _start(config_path, ray_address)
    try:
        assert wait_for(lambda: driver.poll() is not None or ledger.committed()), "no unit committed"
        assert driver.poll() is None, "the run finished before it could be stopped"
        os.kill(driver.pid, signal.SIGTERM)
        stopped = time.monotonic()
        out, _ = driver.communicate(timeout=60)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 130 and time.monotonic() - stopped < 60
    assert "interrupted" in out
    assert not (tmp_path / "out" / "_lease.json").exists()
    committed = ledger.committed()
    assert 0 < len(committed) < 12
    record = json.loads(next((tmp_path / "out" / "_runs").glob("*.json")).read_text())
    assert record["error"].startswith("interrupted") and record["units_done"] == len(committed)

    rerun = run(parse_config(yaml.safe_load(config_path.read_text())), progress=False)
    assert rerun.ok and rerun.units_skipped == len(committed) and rerun.units_done == 12 - len(committed)
    ids = output_ids(tmp_path / "out")
    assert len(ids) == len(set(ids)) == len(docs)


def test_a_kill_while_planning_leaves_nothing(s3_endpoint, s3_bucket, tmp_path) -> None:
    import boto3

    from tests.fault_proxy import FaultPlan, FaultProxy

    bucket = s3_bucket.removeprefix("s3://")
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    for index in range(40):
        client.put_object(Bucket=bucket, Key=f"corpus/p{index:02d}.parquet", Body=_parquet_bytes(index))
    with FaultProxy(s3_endpoint, FaultPlan(delay_s=0.2)) as slow:
        data = {"input": {"path": f"{s3_bucket}/corpus/", "rows_per_unit": 1}, "output": {"path": f"{s3_bucket}/out/"},
                "storage": {"endpoint_url": slow}}
        planning = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(_write_config(tmp_path, data))],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(6)                   # imports, then footers of 40 Parquet shards at 0.2 s a request
        assert planning.poll() is None, "planning finished before the kill"
        os.killpg(planning.pid, signal.SIGKILL)
        planning.wait(timeout=30)
    listed = client.list_objects_v2(Bucket=bucket, Prefix="out/")
    assert listed.get("KeyCount", 0) == 0


def _parquet_bytes(index: int) -> bytes:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(pa.table({"text": [f"doc {index} row {row}" for row in range(4)]}), sink, row_group_size=2)
    return sink.getvalue()


def test_a_kill_during_overwrite_deletion_then_rerun_gives_each_id_once(ray_address, s3_endpoint, s3_bucket,
                                                                        tmp_path) -> None:
    import boto3

    from tests.fault_proxy import FaultPlan, FaultProxy

    bucket = s3_bucket.removeprefix("s3://")
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    docs = demo_documents()[:60]
    for index in range(12):
        body = "".join(json.dumps(doc) + "\n" for doc in docs[index * 5:(index + 1) * 5]).encode()
        client.put_object(Bucket=bucket, Key=f"corpus/s{index:02d}.jsonl", Body=body)
    data = {"input": {"path": f"{s3_bucket}/corpus/", "id_field": "id"}, "output": {"path": f"{s3_bucket}/out/"},
            "storage": {"endpoint_url": s3_endpoint}, "resources": dict(SMALL)}
    assert run(parse_config(data), progress=False).ok
    ledger = Ledger(Folder(f"{s3_bucket}/out", parse_config(data).storage))
    assert len(ledger.committed()) == 12

    with FaultProxy(s3_endpoint, FaultPlan(delay_s=0.15)) as slow:
        slow_data = {**data, "storage": {"endpoint_url": slow}}
        overwrite = _start(_write_config(tmp_path, slow_data), ray_address, "--overwrite", "--yes")
        try:
            assert wait_for(lambda: overwrite.poll() is not None or 0 < len(ledger.committed()) < 12, timeout=120)
            assert overwrite.poll() is None, "the overwrite finished its deletion before the kill"
            os.killpg(overwrite.pid, signal.SIGKILL)
            overwrite.wait(timeout=30)
        finally:
            if overwrite.poll() is None:
                os.killpg(overwrite.pid, signal.SIGKILL)
    left = len(ledger.committed())
    assert left < 12
    rerun = run(parse_config(data), progress=False)
    assert rerun.ok, rerun.lines()
    import pyarrow.fs as pafs

    s3 = pafs.S3FileSystem(endpoint_override=s3_endpoint.removeprefix("http://"), scheme="http", region="us-east-1")
    ids = ds.dataset(f"{bucket}/out/data", filesystem=s3, format="parquet").to_table(columns=["id"]).column("id").to_pylist()
    assert sorted(ids) == sorted(d["id"] for d in docs) and len(ids) == len(set(ids))
    print(f"killed with {left} of 12 commit records left; the rerun embedded {rerun.units_done} units")
