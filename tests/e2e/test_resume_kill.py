"""Kill the driver with SIGKILL mid-run, run again: every document exactly once, no unit redone."""
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

from pipeline.config import load_config
from pipeline.ledger import Ledger
from pipeline.storage import Folder
from pipeline.run import run
from tests.conftest import demo_documents, embedding_actor_pids, wait_for, write_shards

pytestmark = pytest.mark.slow


def _committed(output: Path) -> dict:
    return Ledger(Folder(str(output))).committed()


def test_sigkill_then_resume_exactly_once(ray_address, tmp_path) -> None:
    docs = write_shards(tmp_path / "corpus", demo_documents()[:300], shards=15, gzip_every=4)
    output = tmp_path / "out"
    config_path = tmp_path / "job.yaml"
    # One unit per actor call, so units commit one after another while the driver runs.
    config_path.write_text(yaml.safe_dump({
        "input": {"path": str(tmp_path / "corpus"), "id_field": "id"},
        "output": {"path": str(output)},
        "resources": {"batch_rows": 20, "read_block_rows": 20},
    }))
    env = {**os.environ, "RAY_ADDRESS": ray_address}
    driver = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(config_path)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and driver.poll() is None and not _committed(output):
            time.sleep(0.02)
        assert driver.poll() is None, "driver finished before any unit committed"
        assert embedding_actor_pids(), "no embedding actor process of the run found"
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == -signal.SIGKILL

    before = _committed(output)
    assert 0 < len(before) < 15, f"{len(before)} units committed at the kill: the kill was not mid-run"
    # The dead driver's actors, the only writers of staged parts, end with it (Ray ends a job whose
    # driver died); once their processes are gone, nothing more is staged.
    assert wait_for(lambda: not embedding_actor_pids(), timeout=60), "the dead driver's actors still run"
    staged = sorted(str(p) for p in (output / "_staging").rglob("*")) if (output / "_staging").exists() else []
    time.sleep(1)
    assert staged == (sorted(str(p) for p in (output / "_staging").rglob("*")) if (output / "_staging").exists() else [])
    records_before = {key: (output / entry.name).read_bytes() for key, entry in before.items()}
    rows_before = sum(json.loads(data)["rows_in"] for data in records_before.values())

    summary = run(load_config(str(config_path)), progress=False)
    assert summary.ok, summary.lines()
    assert summary.units_skipped == len(before)
    assert summary.units_done == 15 - len(before)
    assert summary.rows_in == len(docs) - rows_before          # committed rows were not embedded again
    for key, entry in _committed(output).items():
        if key in before:
            assert (output / entry.name).read_bytes() == records_before[key]   # untouched commit records

    ids = ds.dataset(str(output), format="parquet").to_table(columns=["id"]).column("id").to_pylist()
    assert len(ids) == len(set(ids)) == len(docs)
    assert set(ids) == {doc["id"] for doc in docs}
    leftovers = [p for p in output.rglob("*") if p.is_file() and (p.name.startswith(".tmp") or "_staging" in p.parts)]
    assert leftovers == []
