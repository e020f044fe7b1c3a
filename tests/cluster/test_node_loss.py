"""Node loss: SIGKILL a worker node (its whole process group, and its workers and actors) in the middle
of a run on a three-node cluster.

The run either finishes on the nodes left (Ray Data restarts the lost actor elsewhere, retries its
tasks and rebuilds lost blocks from their lineage) or exits 1 with a one-line reason; both are
acceptable. Either way a rerun ends with every id exactly once, and the units committed before the
kill are not redone: their ledger records are byte-for-byte the same after the rerun, and the
rerun embeds only the rows that were not committed.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from pipeline.config import load_config
from pipeline.ledger import Ledger
from pipeline.storage import Folder
from tests.cluster.conftest import (SMALL_BLOCKS, cli_env, corpus_embed, documents, keys, output_ids, run_records,
                                    s3_config, upload_corpus)
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow


def test_worker_node_killed_mid_run_then_rerun_exactly_once(cluster, s3_endpoint, s3_bucket, tmp_path) -> None:
    victim_candidates = [cluster.node("a"), cluster.add_node("b", num_cpus=1)]
    docs = documents(480)
    upload_corpus(s3_endpoint, s3_bucket, docs, shards=24)
    config_path = s3_config(s3_bucket, s3_endpoint, tmp_path / "job.json", actors=2, cpus_per_actor=0.5,
                            batch_rows=5, read_block_rows=5)
    config = load_config(str(config_path))
    output = Folder(config.output.path, config.storage)
    ledger = Ledger(output)

    log = tmp_path / "driver.log"
    with open(log, "w") as sink:
        driver = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(config_path)], cwd=REPO_ROOT,
                                  env=cli_env(cluster, **SMALL_BLOCKS), stdout=sink, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    victim = None
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and driver.poll() is None:
            if ledger.committed():
                hosts = {actor["node_id"] for actor in cluster.actors("EmbeddingActor")}
                victim = next((node for node in victim_candidates if node.node_id in hosts), None)
                if victim is not None:
                    break
            time.sleep(0.5)
        assert driver.poll() is None, f"the run ended before the kill:\n{log.read_text()[-3000:]}"
        assert victim is not None, "no worker node hosted an embedding actor once units were committing"
        cluster.kill(victim)
        killed_at = time.monotonic()
        before = {key: output.read_bytes(entry.name) for key, entry in ledger.committed().items()}
        assert 0 < len(before) < 24, f"{len(before)} of 24 units committed at the kill: not mid-run"
        driver.wait(timeout=240)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
    text = log.read_text()
    ended_after = time.monotonic() - killed_at
    assert driver.returncode in (0, 1), text[-4000:]
    assert "Traceback" not in text, text[-4000:]
    if driver.returncode == 1:                          # a clear reason, on one line
        assert any(line.startswith("  FAILED") for line in text.splitlines()), text[-4000:]
    cluster.wait_dead(victim)

    first = run_records(s3_endpoint, s3_bucket)[-1]
    rows_by_node = {node[:8]: info["rows"] for node, info in first["nodes"].items()}
    print(f"killed node {victim.name} ({victim.node_id[:8]}) with {len(before)} of 24 units committed; the run "
          f"exited {driver.returncode} {ended_after:.0f} s later; its rows by node: {rows_by_node}")
    committed_after_first = {key: output.read_bytes(entry.name) for key, entry in ledger.committed().items()}
    rows_committed = sum(record.rows_in for record in ledger.read(list(ledger.committed().values())))

    rerun = corpus_embed("run", str(config_path), env=cli_env(cluster, **SMALL_BLOCKS))
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    second = run_records(s3_endpoint, s3_bucket)[-1]
    assert second["run_id"] != first["run_id"] and second["ok"]
    assert second["units_skipped"] == len(committed_after_first)
    assert second["rows_in"] == len(docs) - rows_committed          # committed rows were not embedded again
    after = {key: output.read_bytes(entry.name) for key, entry in ledger.committed().items()}
    assert len(after) == 24
    for key, record in before.items():
        assert after[key] == record, f"unit {key}, committed before the kill, was redone"

    ids = output_ids(s3_endpoint, f"{s3_bucket}/out/")
    assert len(ids) == len(set(ids)) == len(docs)
    assert set(ids) == {doc["id"] for doc in docs}
    assert not [key for key in keys(s3_endpoint, f"{s3_bucket}/out/") if "_staging" in key]
