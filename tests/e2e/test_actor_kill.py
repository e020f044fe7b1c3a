"""An embedding actor killed mid-run (SIGKILL of its process): Ray restarts it, the run completes exactly once."""
from __future__ import annotations

import os
import signal

import pyarrow.dataset as ds
import pytest

from pipeline.config import parse_config
from pipeline.run import run
from tests.conftest import demo_documents, embedding_actor_pids, write_shards

pytestmark = pytest.mark.slow


def test_actor_killed_mid_run_is_restarted(ray_address, tmp_path) -> None:
    docs = write_shards(tmp_path / "corpus", demo_documents()[:240], shards=12)
    config = parse_config({"input": {"path": str(tmp_path / "corpus"), "id_field": "id"},
                           "output": {"path": str(tmp_path / "out")},
                           "resources": {"batch_rows": 20, "read_block_rows": 20}})
    killed: list[int] = []

    def kill_actor_once(unit_key: str) -> None:
        if not killed:
            pids = embedding_actor_pids()
            assert pids, "no embedding actor process found"
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            killed.extend(pids)

    summary = run(config, progress=False, on_commit=kill_actor_once)
    assert killed, "the actor was never killed"
    assert summary.ok, summary.lines()
    assert summary.units_done == 12 and summary.rows_in == len(docs)
    ids = ds.dataset(str(tmp_path / "out"), format="parquet").to_table(columns=["id"]).column("id").to_pylist()
    assert len(ids) == len(set(ids)) == len(docs)
    assert set(ids) == {doc["id"] for doc in docs}
    assert all(pid not in embedding_actor_pids() for pid in killed)
