"""End-to-end set-up: one local Ray (2 CPUs) for the session, and small corpora of real text."""
from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_CORPUS = REPO_ROOT / "examples" / "corpus"


def demo_documents() -> list[dict]:
    """The 320 documents of the demo corpus (The Devil's Dictionary)."""
    docs = []
    for path in sorted(DEMO_CORPUS.glob("*.jsonl*")):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as handle:
            docs.extend(json.loads(line) for line in handle if line.strip())
    return docs


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


@pytest.fixture(scope="session")
def ray_address() -> str:
    """A local Ray with 2 CPUs; its address lets subprocess drivers join it (no start-up per run)."""
    import os

    import ray

    os.environ["CORPUS_EMBED_PROGRESS_BARS"] = "0"
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
