"""Shared test set-up: reference fixtures, the packaged model, a local Ray, an S3 server, small corpora."""
from __future__ import annotations

import gzip
import json
import logging
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# The reference files the stack tests compare against; what made each one: tests/fixtures/README.md.
FIXTURES = REPO_ROOT / "tests" / "fixtures"

# Keep Ray and the hub quiet and offline in every test process.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """``tests/fixtures`` in the checkout: reference model files and the outputs the real libraries give."""
    if not FIXTURES.is_dir():
        pytest.fail(f"reference fixtures not found at {FIXTURES}: the checkout is incomplete")
    return FIXTURES


@pytest.fixture(scope="session")
def sentences_a(fixtures_dir: Path) -> list[list[str]]:
    import json

    return json.loads((fixtures_dir / "sentences_A.json").read_text())


@pytest.fixture(scope="session")
def minilm_path() -> str:
    from actors.stack.registry import packaged_transformer_path

    return packaged_transformer_path()


# Object storage in tests is real: moto's S3 server on loopback, spoken to over HTTP. The
# credentials are fake but secret-looking, so the leak test can grep everything written for them.
TEST_ACCESS_KEY = "AKIACORPUSEMBEDTEST01"
TEST_SECRET_KEY = "cOrPuS/eMbEd+SeCrEt/DoNotLeak0123456789xyz"
os.environ.setdefault("AWS_ACCESS_KEY_ID", TEST_ACCESS_KEY)
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", TEST_SECRET_KEY)
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int, exclude: set[int] = frozenset()) -> list[int]:
    """``count`` distinct free ports, none in ``exclude``: the sockets stay bound until all are found,
    so that the OS cannot hand the same port out twice (it reuses a just-closed one readily)."""
    import socket

    sockets: list[socket.socket] = []
    try:
        ports: list[int] = []
        while len(ports) < count:
            sock = socket.socket()
            sockets.append(sock)
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            if port not in exclude:
                ports.append(port)
        return ports
    finally:
        for sock in sockets:
            sock.close()


@pytest.fixture(scope="session")
def s3_endpoint() -> str:
    """moto's standalone S3 server on 127.0.0.1 at a free port, for the whole session."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str, request: pytest.FixtureRequest) -> str:
    """A fresh bucket per test (name from the test's name); returns ``s3://bucket``."""
    import re
    import uuid

    import boto3

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-") + "-" + uuid.uuid4().hex[:6]
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return f"s3://{name}"


# The demo corpus (The Devil's Dictionary, 320 documents) and its reader live with the benchmarks.
from bench.corpus import DEMO_CORPUS, demo_documents  # noqa: E402,F401


def write_shards(root: Path, docs: list[dict], shards: int, gzip_every: int = 0) -> list[dict]:
    """Spread ``docs`` over ``shards`` JSONL files (every ``gzip_every``-th gzipped); returns the docs."""
    root.mkdir(parents=True, exist_ok=True)
    per_shard = -(-len(docs) // shards)
    for index in range(shards):
        chunk = docs[index * per_shard:(index + 1) * per_shard]
        data = "".join(json.dumps(doc) + "\n" for doc in chunk).encode()
        if gzip_every and index % gzip_every == 0:
            (root / f"part-{index:03d}.jsonl.gz").write_bytes(gzip.compress(data, mtime=0))
        else:
            (root / f"part-{index:03d}.jsonl").write_bytes(data)
    return docs


def wait_for(predicate, timeout: float = 180, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it holds (True) or ``timeout`` seconds pass (False)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def embedding_actor_pids() -> list[int]:
    """The embedding actors' processes of the local Ray this test process started (``ray_address``):
    Ray titles them after their class (``ray::MapWorker(MapBatches(StagingEmbeddingActor))``) and this
    process is their ancestor, so another test process's Ray and its actors are never counted."""
    import psutil

    pids = []
    for process in psutil.Process().children(recursive=True):
        try:
            cmdline = " ".join(process.cmdline())
        except psutil.Error:      # ended while listed
            continue
        if "EmbeddingActor" in cmdline:
            pids.append(process.pid)
    return pids


def output_ids(output: Path) -> list:
    """The ids of every committed row of a local output, read back as a user would (``data/``)."""
    import pyarrow.dataset as ds

    if not (output / "data").exists():
        return []
    return ds.dataset(str(output / "data"), format="parquet").to_table(columns=["id"]).column("id").to_pylist()


@pytest.fixture(scope="session")
def ray_address() -> str:
    """A local Ray with 2 CPUs; its address lets subprocess drivers join it (no start-up per run)."""
    import os

    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def torch_one_thread():
    """Tiny models on a shared 2-core machine: a second spinning thread costs more than it saves.

    Modules opt in with ``pytestmark = pytest.mark.usefixtures("torch_one_thread")``.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
