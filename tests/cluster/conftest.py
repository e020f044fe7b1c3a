"""A two-node Ray cluster on this machine (head + node ``a``, 1 CPU each) and the S3 server, for every
test of this folder; helpers to put a corpus in S3, run ``corpus-embed`` against the cluster, and read
the output and its ledger back.

The cluster is started once for this folder and stopped when its last test is done (every process
of every node, even after a failure): idle, its daemons take about a sixth of a core, which the
rest of the suite would pay otherwise. Tests that add or kill nodes leave it as they found it:
``cluster`` (function scope) re-adds a node ``a`` when a test killed it and checks that exactly
the head and ``a`` are alive before each test.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pytest

from tests.cluster.ray_cluster import WAIT_FOR_ACTORS, LocalRayCluster
from tests.conftest import REPO_ROOT


@pytest.fixture(scope="package")
def shared_ray_cluster(tmp_path_factory: pytest.TempPathFactory):
    cluster = LocalRayCluster(tmp_path_factory.mktemp("rc"))
    try:
        cluster.start_head(num_cpus=1)
        cluster.add_node("a", num_cpus=1)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster(shared_ray_cluster: LocalRayCluster) -> LocalRayCluster:
    """The session's cluster with exactly its two nodes alive: nodes a test added are stopped, and a
    node ``a`` a test killed is replaced (the GCS must have noticed the kills first)."""
    cluster = shared_ray_cluster
    alive = {info["node_id"] for info in cluster.alive_nodes()}
    for node in cluster.nodes:
        if node.head:
            continue
        if not node.killed and node.name != "a":
            cluster.kill(node)
        if node.killed and node.node_id in alive:
            cluster.wait_dead(node)
    if not any(node.name == "a" and not node.killed for node in cluster.nodes):
        for node in cluster.nodes:
            if node.name == "a":
                node.name = f"a-killed-{node.node_id[:8]}"
        cluster.add_node("a", num_cpus=1)
    names = sorted(resource for info in cluster.alive_nodes() for resource in info["resources_total"]
                   if resource.startswith("node_"))
    assert names == ["node_a", "node_head"], names
    return cluster


# Small Ray Data blocks (pipeline.ray_pipeline.BLOCK_BYTES is 4 MiB): each unit of a small test corpus
# becomes several blocks, as a big unit does at the default. A reader yields its blocks much faster
# than an actor embeds them, so they queue up and every actor of the pool, on every node, gets some.
# With one block per unit, Ray Data hands each block to the actor on the node that read it whenever
# that actor has room, and which actors embed anything would depend on timing.
SMALL_BLOCKS = {"CORPUS_EMBED_BLOCK_BYTES": "4096"}


def documents(count: int) -> list[dict]:
    """``count`` documents: the demo corpus's 320, repeated as often as needed with ids made unique."""
    from tests.conftest import demo_documents

    base = demo_documents()
    return [{**doc, "id": f"{doc['id']}#{index // len(base)}" if index >= len(base) else doc["id"]}
            for index, doc in ((index, base[index % len(base)]) for index in range(count))]


# -- S3 ---------------------------------------------------------------------------------------------
def put(endpoint: str, url: str, data: bytes) -> None:
    bucket, _, key = url.removeprefix("s3://").partition("/")
    boto3.client("s3", endpoint_url=endpoint).put_object(Bucket=bucket, Key=key, Body=data)


def keys(endpoint: str, url: str) -> list[str]:
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    pages = boto3.client("s3", endpoint_url=endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def upload_corpus(endpoint: str, bucket: str, docs: list[dict], shards: int) -> None:
    """``docs`` as ``shards`` JSONL files under ``BUCKET/corpus/``."""
    size = -(-len(docs) // shards)
    for index in range(shards):
        chunk = docs[index * size:(index + 1) * size]
        put(endpoint, f"{bucket}/corpus/part-{index:03d}.jsonl", "".join(json.dumps(d) + "\n" for d in chunk).encode())


def output_ids(endpoint: str, url: str) -> list[Any]:
    """The output's ids, read back with pyarrow's own S3 client, as a downstream user would."""
    s3 = pafs.S3FileSystem(endpoint_override=endpoint.removeprefix("http://"), scheme="http", region="us-east-1")
    table = ds.dataset(url.removeprefix("s3://").rstrip("/"), filesystem=s3, format="parquet").to_table(columns=["id"])
    return table.column("id").to_pylist()


def s3_config(bucket: str, endpoint: str, path: Path, **resources: Any) -> Path:
    """A job config (input and output in S3) written to ``path``; ``resources`` override the defaults."""
    data = {"input": {"path": f"{bucket}/corpus/", "id_field": "id"}, "output": {"path": f"{bucket}/out/"},
            "storage": {"endpoint_url": endpoint},
            "resources": {"actors": 2, "cpus_per_actor": 0.5, "batch_rows": 8, "read_block_rows": 8, **resources}}
    path.write_text(json.dumps(data))
    return path


def run_records(endpoint: str, bucket: str) -> list[dict]:
    """Every ``_runs/<run-id>.json`` of the output, oldest first."""
    client = boto3.client("s3", endpoint_url=endpoint)
    name = bucket.removeprefix("s3://")
    return [json.loads(client.get_object(Bucket=name, Key=key)["Body"].read())
            for key in keys(endpoint, f"{bucket}/out/_runs/") if key.endswith(".json")]


# -- corpus-embed against the cluster ----------------------------------------------------------------
def cli_env(cluster: LocalRayCluster | None, **extra: str) -> dict[str, str]:
    """The environment of a driver: joins ``cluster`` through ``RAY_ADDRESS`` (none: a local Ray)."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])),
           **WAIT_FOR_ACTORS, **extra}
    env.pop("RAY_ADDRESS", None)
    if cluster is not None:
        env["RAY_ADDRESS"] = cluster.address
    return env


def corpus_embed(*args: str, env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    """``corpus-embed ARGS`` as a subprocess of this checkout (stderr is a pipe: not a terminal)."""
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
