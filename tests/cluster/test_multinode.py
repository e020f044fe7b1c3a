"""Runs on a real two-node Ray cluster: actors on both nodes, every id exactly once, the run record's
per-node rows, ``status``, ``ray job submit``, and local paths refused (or allowed with a shared FS).

Both ways in are tested: a ``corpus-embed run`` subprocess joining through ``RAY_ADDRESS``, and
``ray job submit`` to the head's job server (the driver then runs on the head, as on a real cluster).
Input and output are in S3 (moto on 127.0.0.1), which every node reaches.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from tests.cluster.conftest import (SMALL_BLOCKS, cli_env, corpus_embed, documents, keys, output_ids, run_records,
                                    s3_config, upload_corpus)
from tests.cluster.ray_cluster import LocalRayCluster, ray_bin
from tests.conftest import REPO_ROOT, demo_documents, write_shards

pytestmark = pytest.mark.slow


def _assert_on_both_nodes(record: dict, cluster: LocalRayCluster, docs: int) -> None:
    nodes = record["nodes"]
    alive = {node.node_id for node in cluster.nodes if not node.killed}
    assert set(nodes) == alive and len(nodes) == 2, (nodes, alive)
    assert sum(info["rows"] for info in nodes.values()) == docs
    assert all(info["rows"] > 0 and len(info["actors"]) >= 1 for info in nodes.values()), nodes


def test_run_through_ray_address_uses_both_nodes(cluster, s3_endpoint, s3_bucket, tmp_path) -> None:
    docs = demo_documents()[:64]
    upload_corpus(s3_endpoint, s3_bucket, docs, shards=2)
    config = s3_config(s3_bucket, s3_endpoint, tmp_path / "job.json", batch_rows=4, read_block_rows=4)
    started = time.monotonic()
    done = corpus_embed("run", str(config), env=cli_env(cluster, **SMALL_BLOCKS))
    assert done.returncode == 0, done.stderr[-4000:]
    print(f"run on 2 nodes: {time.monotonic() - started:.1f} s")

    ids = output_ids(s3_endpoint, f"{s3_bucket}/out/")
    assert sorted(ids) == sorted(doc["id"] for doc in docs) and len(ids) == len(set(ids))
    [record] = run_records(s3_endpoint, s3_bucket)
    assert record["ok"] and record["units_done"] == 2 and record["rows_in"] == 64
    _assert_on_both_nodes(record, cluster, 64)
    assert "  nodes: " in done.stdout               # the summary names both nodes

    # status summarises the last run's nodes (pipeline.status.format_status)
    status = corpus_embed("status", f"{s3_bucket}/out/", "--endpoint-url", s3_endpoint, env=cli_env(None))
    assert status.returncode == 0, status.stderr
    [line] = [line for line in status.stdout.splitlines() if line.startswith("  last run's nodes: ")]
    for node_id, info in record["nodes"].items():
        assert f"{node_id[:12]} ({info['ip']}): {info['rows']:,} rows, {len(info['actors'])} actor(s)" in line
    assert "2 done, 0 pending, 0 failed" in status.stdout


def test_ray_job_submit_uses_both_nodes(cluster, s3_endpoint, s3_bucket, tmp_path) -> None:
    """As docs/cluster.md says: from the repo root, ``--runtime-env infra/runtime_env.yaml``."""
    docs = demo_documents()[:48]
    upload_corpus(s3_endpoint, s3_bucket, docs, shards=2)
    config = s3_config(s3_bucket, s3_endpoint, tmp_path / "job.json", batch_rows=4, read_block_rows=4)
    submission = f"ce-cluster-{uuid.uuid4().hex[:8]}"
    small_blocks = [f"{key}={value}" for key, value in SMALL_BLOCKS.items()]      # the entrypoint is a shell command
    done = subprocess.run([ray_bin(), "job", "submit", "--address", cluster.dashboard, "--runtime-env",
                           "infra/runtime_env.yaml", "--submission-id", submission, "--",
                           *small_blocks, "python", "-m", "jobs.embed_corpus", str(config)],
                          cwd=REPO_ROOT, env=cluster.env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    assert "[embed_corpus] ran on cluster at " in done.stdout + done.stderr

    ids = output_ids(s3_endpoint, f"{s3_bucket}/out/")
    assert sorted(ids) == sorted(doc["id"] for doc in docs) and len(ids) == len(set(ids))
    [record] = run_records(s3_endpoint, s3_bucket)
    assert record["ok"] and record["units_done"] == 2
    _assert_on_both_nodes(record, cluster, 48)


def test_a_failed_job_ends_with_its_reason(cluster, tmp_path) -> None:
    """A job whose config is wrong fails at once, and its last log line says why."""
    from ray.job_submission import JobSubmissionClient

    config = tmp_path / "bad.yaml"
    config.write_text(f"input: {{path: {tmp_path}}}\noutput: {{path: {tmp_path / 'out'}, granularity: paragraph}}\n")
    submission = f"ce-bad-{uuid.uuid4().hex[:8]}"
    done = subprocess.run([ray_bin(), "job", "submit", "--address", cluster.dashboard, "--runtime-env",
                           "infra/runtime_env.yaml", "--submission-id", submission, "--",
                           "python", "-m", "jobs.embed_corpus", str(config)],
                          cwd=REPO_ROOT, env=cluster.env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    client = JobSubmissionClient(cluster.dashboard)
    assert str(client.get_job_status(submission).value) == "FAILED"
    last = [line for line in client.get_job_logs(submission).splitlines() if line.strip()][-1]
    assert last.startswith("embed_corpus FAILED: invalid config") and "output.granularity" in last, last


def _local_corpus(root: Path, docs: list[dict]) -> Path:
    write_shards(root, docs, shards=2)
    return root


def test_local_output_on_a_cluster_is_refused_before_any_work(cluster, s3_endpoint, s3_bucket, tmp_path) -> None:
    upload_corpus(s3_endpoint, s3_bucket, demo_documents()[:8], shards=2)
    config = s3_config(s3_bucket, s3_endpoint, tmp_path / "job.json")
    local_out = tmp_path / "out"
    done = corpus_embed("run", str(config), "--set", f"output.path={local_out}", env=cli_env(cluster))
    assert done.returncode == 2, done.stderr[-3000:]
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("corpus-embed: output.path ") and "the Ray cluster has 2 nodes" in line, line
    assert "storage.shared_filesystem" in line
    assert not local_out.exists()
    assert keys(s3_endpoint, f"{s3_bucket}/") == ["corpus/part-000.jsonl", "corpus/part-001.jsonl"]


def test_local_input_on_a_cluster_is_refused_before_any_work(cluster, s3_endpoint, s3_bucket, tmp_path) -> None:
    corpus = _local_corpus(tmp_path / "corpus", demo_documents()[:8])
    config = s3_config(s3_bucket, s3_endpoint, tmp_path / "job.json")
    done = corpus_embed("run", str(config), "--set", f"input.path={corpus}", env=cli_env(cluster))
    assert done.returncode == 2, done.stderr[-3000:]
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("corpus-embed: input.path ") and "the Ray cluster has 2 nodes" in line, line
    assert keys(s3_endpoint, f"{s3_bucket}/") == []
    assert sorted(path.name for path in corpus.iterdir()) == ["part-000.jsonl", "part-001.jsonl"]


def test_local_paths_with_shared_filesystem_run_on_both_nodes(cluster, tmp_path) -> None:
    """Every node of this cluster is on this machine, so a local folder is a shared filesystem here."""
    docs = demo_documents()[:48]
    corpus = _local_corpus(tmp_path / "corpus", docs)
    output = tmp_path / "out"
    config = tmp_path / "job.json"
    config.write_text(json.dumps({
        "input": {"path": str(corpus), "id_field": "id"}, "output": {"path": str(output)},
        "storage": {"shared_filesystem": True},
        "resources": {"actors": 2, "cpus_per_actor": 0.5, "batch_rows": 4, "read_block_rows": 4}}))
    done = corpus_embed("run", str(config), env=cli_env(cluster, **SMALL_BLOCKS))
    assert done.returncode == 0, done.stderr[-4000:]
    ids = ds.dataset(str(output), format="parquet").to_table(columns=["id"]).column("id").to_pylist()
    assert sorted(ids) == sorted(doc["id"] for doc in docs) and len(ids) == len(set(ids))
    [record] = [json.loads(path.read_text()) for path in (output / "_runs").glob("*.json")]
    _assert_on_both_nodes(record, cluster, 48)


def test_autoscaling_pool_grows_on_the_cluster(cluster, s3_endpoint, s3_bucket, tmp_path) -> None:
    """``actors: [1, 3]``: the pool starts at one actor, grows while blocks queue up, and is released at
    the end; more than one actor embeds rows, and every id is written once."""
    # Enough work that an actor added mid-run (loading its model takes 10-40 s on a loaded 2-core
    # machine) still finds some left.
    docs = documents(960)
    upload_corpus(s3_endpoint, s3_bucket, docs, shards=12)
    config = s3_config(s3_bucket, s3_endpoint, tmp_path / "job.json", actors=[1, 3], cpus_per_actor=0.4,
                       batch_rows=16, read_block_rows=16)
    log = tmp_path / "driver.log"
    with open(log, "w") as sink:
        driver = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(config)], cwd=REPO_ROOT,
                                  env=cli_env(cluster), stdout=sink, stderr=subprocess.STDOUT)
    most_alive, seen = 0, set()
    try:
        deadline = time.monotonic() + 240
        while driver.poll() is None and time.monotonic() < deadline:
            alive = [actor["actor_id"] for actor in cluster.actors("EmbeddingActor")]
            most_alive, seen = max(most_alive, len(alive)), seen | set(alive)
            time.sleep(1)
        driver.wait(timeout=60)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 0, log.read_text()[-4000:]
    print(f"autoscaling: at most {most_alive} embedding actors alive at once, {len(seen)} seen")

    ids = output_ids(s3_endpoint, f"{s3_bucket}/out/")
    assert sorted(ids) == sorted(doc["id"] for doc in docs) and len(ids) == len(set(ids))
    [record] = run_records(s3_endpoint, s3_bucket)
    working = {actor for info in record["nodes"].values() for actor in info["actors"]}
    assert len(working) > 1, record["nodes"]            # more than min_size actors embedded rows
    assert most_alive > 1 and len(seen) <= 3
    assert sum(info["rows"] for info in record["nodes"].values()) == len(docs)
    deadline = time.monotonic() + 30                    # the pool is released once the work is done
    while cluster.actors("EmbeddingActor") and time.monotonic() < deadline:
        time.sleep(1)
    assert cluster.actors("EmbeddingActor") == []
