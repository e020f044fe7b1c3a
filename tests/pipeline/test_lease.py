"""One writer per output: the lease is taken atomically, refused while its holder lives, taken over
when it is stale or its holder died on this host, and a run that lost it notices."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from pipeline.lease import Lease, LeaseHeldError, LeaseLostError, read_lease
from pipeline.storage import Folder


@pytest.fixture(params=["local", "s3"])
def output(request, tmp_path) -> Folder:
    if request.param == "local":
        return Folder(str(tmp_path / "out"))
    from pipeline.config import StorageConfig

    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = request.getfixturevalue("s3_bucket")
    return Folder(f"{bucket}/out", StorageConfig(endpoint_url=endpoint))


def _foreign_lease(output: Folder, age_s: float, host: str = "another-host", pid: int = 4242) -> None:
    now = time.time()
    lease = {"run_id": "20260101T000000-abcdef", "host": host, "pid": pid, "started_at": now - age_s - 60,
             "heartbeat_at": now - age_s, "timeout_s": 30.0}
    output.write_json("_lease.json", lease)


def test_second_lease_is_refused_naming_the_holder(output) -> None:
    first = Lease(output, "run-one", timeout_s=30).acquire()
    try:
        started = time.monotonic()
        with pytest.raises(LeaseHeldError) as refused:
            Lease(output, "run-two", timeout_s=30).acquire()
        assert time.monotonic() - started < 5
        message = str(refused.value)
        assert "run-one" in message and socket.gethostname() in message and "lease_timeout_s" in message
    finally:
        first.release()
    assert read_lease(output) == (None, None)
    Lease(output, "run-three", timeout_s=30).acquire().release()


def test_fresh_foreign_lease_is_held_and_a_stale_one_taken_over(output) -> None:
    _foreign_lease(output, age_s=5)
    with pytest.raises(LeaseHeldError, match="another-host"):
        Lease(output, "mine", timeout_s=30).acquire()
    _foreign_lease(output, age_s=120)
    lease = Lease(output, "mine", timeout_s=30).acquire()
    try:
        assert lease.taken_over is not None and lease.taken_over.host == "another-host"
        holder, _ = read_lease(output)
        assert holder.run_id == "mine"
    finally:
        lease.release()


def test_a_dead_holder_on_this_host_is_taken_over_at_once(output) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    _foreign_lease(output, age_s=0, host=socket.gethostname(), pid=int(dead.stdout))
    lease = Lease(output, "mine", timeout_s=300).acquire()
    try:
        assert lease.taken_over is not None and lease.taken_over.pid == int(dead.stdout)
    finally:
        lease.release()


def test_of_two_takeovers_exactly_one_wins(output) -> None:
    _foreign_lease(output, age_s=120)
    first = Lease(output, "first", timeout_s=30).acquire()
    try:
        with pytest.raises(LeaseHeldError, match="first"):
            Lease(output, "second", timeout_s=30).acquire()
    finally:
        first.release()


def test_heartbeat_keeps_the_lease_fresh_and_a_taken_lease_is_noticed(output) -> None:
    lease = Lease(output, "mine", timeout_s=2).acquire()      # heartbeat every 0.5 s
    try:
        before, _ = read_lease(output)
        time.sleep(1.6)
        after, _ = read_lease(output)
        assert after.heartbeat_at > before.heartbeat_at and after.run_id == "mine"
        lease.check()
        output.write_json("_lease.json", {**json.loads(output.read_bytes("_lease.json")), "run_id": "thief"})
        with pytest.raises(LeaseLostError, match="thief"):
            lease.check()
    finally:
        lease.release()
    holder, _ = read_lease(output)
    assert holder is not None and holder.run_id == "thief"     # a lost lease is not deleted by its loser


def test_the_lease_holder_sweeps_dead_writers_temp_files_and_keeps_live_ones(tmp_path) -> None:
    from pipeline.layout import FAILED_DIR, LEDGER_DIR
    from pipeline.sink import discard_dead_writes

    output = Folder(str(tmp_path / "out"))
    output.write_json(f"{LEDGER_DIR}/unit-a.json", {"rows_in": 3})
    dead = [f"{LEDGER_DIR}/.tmp-dead", ".tmp-dead", f"{FAILED_DIR}/unit-b/.tmp-dead", "_staging/run-1/unit-a/part-0.parquet"]
    for relative in dead:
        (tmp_path / "out" / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "out" / relative).write_bytes(b"half a write")
    lease_taken_at = time.time() + 1           # every file above was written before the lease was taken
    live = tmp_path / "out" / LEDGER_DIR / ".tmp-live"
    live.write_bytes(b"a write in progress")
    os.utime(live, (lease_taken_at + 1, lease_taken_at + 1))

    discard_dead_writes(output, lease_taken_at)

    left = sorted(output.find())
    assert left == [f"{LEDGER_DIR}/.tmp-live", f"{LEDGER_DIR}/unit-a.json"]
