"""Progress people can follow, on the cluster: plain lines when stderr is not a terminal (every
``CORPUS_EMBED_PROGRESS_INTERVAL`` seconds, moving before the first unit commits, no ANSI codes), Ray's
own log lines and per-operator progress only with ``--verbose``, and rich's live line on a terminal.

``CORPUS_EMBED_BLOCK_BYTES=16384`` cuts the one 60-document unit into several Ray Data blocks, as the
default 4 MiB cuts a big unit, so that rows come back (and progress moves) while the unit is still
being embedded.
"""
from __future__ import annotations

import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
from fcntl import ioctl

import boto3
import pytest

from tests.cluster.conftest import cli_env, corpus_embed, documents, keys, run_records, s3_config, upload_corpus
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow

LINE = re.compile(r"^\[corpus-embed\] units (\d+)/(\d+)(?:, \d+ failed)?, rows ([\d,]+) ")
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]")
# Ray Data's INFO lines and its per-operator progress (tqdm bars on a terminal, "MapBatches(...): n/m"
# log lines elsewhere). Ray's C++ core still prints its ERROR lines (one about actor restarts names
# the operator "MapWorker(MapBatches(StagingEmbeddingActor))"): those are not Ray's progress and stay.
RAY_OUTPUT = ("Running Dataset", "Execution plan", "- MapBatches", "MapBatches(_read_units):",
              "MapBatches(StagingEmbeddingActor):", "logging_progress", "streaming_executor",
              "Starting execution", "Progress bars")


def _progress(text: str) -> list[tuple[int, int]]:
    """(units done, rows) of every progress line."""
    return [(int(m.group(1)), int(m.group(3).replace(",", ""))) for m in map(LINE.match, text.splitlines()) if m]


def _raw_objects(endpoint: str, bucket: str, prefix: str) -> list[bytes]:
    client = boto3.client("s3", endpoint_url=endpoint)
    name = bucket.removeprefix("s3://")
    return [client.get_object(Bucket=name, Key=key)["Body"].read() for key in keys(endpoint, f"{bucket}/{prefix}")]


def test_plain_progress_moves_before_the_first_commit_and_ray_stays_quiet(cluster, s3_endpoint, s3_bucket,
                                                                          tmp_path) -> None:
    upload_corpus(s3_endpoint, s3_bucket, documents(60), shards=1)
    config = s3_config(s3_bucket, s3_endpoint, tmp_path / "job.json", batch_rows=5, read_block_rows=5)
    env = cli_env(cluster, CORPUS_EMBED_PROGRESS_INTERVAL="0.5", CORPUS_EMBED_BLOCK_BYTES="16384")

    done = corpus_embed("run", str(config), env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    progress = _progress(done.stderr)
    assert len(progress) >= 3, done.stderr[-4000:]
    assert progress[-1] == (1, 60)                                   # the last line: the unit and its rows
    assert any(units == 0 and 0 < rows < 60 for units, rows in progress), progress   # moving before the commit
    assert [rows for _, rows in progress] == sorted(rows for _, rows in progress)
    assert "\x1b" not in done.stderr and "\x1b" not in done.stdout
    for marker in RAY_OUTPUT:
        assert marker not in done.stderr, (marker, done.stderr[-3000:])
    [record] = _raw_objects(s3_endpoint, s3_bucket, "out/_runs/")
    assert b"\x1b" not in record and b"\\u001b" not in record

    # --verbose: Ray's own log lines (the execution plan, operator by operator) come back.
    verbose = corpus_embed("run", str(config), "--verbose", "--set", f"output.path={s3_bucket}/out-verbose/", env=env)
    assert verbose.returncode == 0, verbose.stderr[-4000:]
    assert "Execution plan" in verbose.stderr and "MapBatches(StagingEmbeddingActor)" in verbose.stderr, verbose.stderr[-4000:]
    assert _progress(verbose.stderr)[-1] == (1, 60)


def test_live_line_on_a_terminal(cluster, s3_endpoint, s3_bucket, tmp_path) -> None:
    upload_corpus(s3_endpoint, s3_bucket, documents(16), shards=2)
    config = s3_config(s3_bucket, s3_endpoint, tmp_path / "job.json")
    master, slave = pty.openpty()
    ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))      # 50 rows, 200 columns
    env = {**cli_env(cluster), "TERM": "xterm-256color", "COLUMNS": "200"}
    env.pop("NO_COLOR", None)
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:                      # EIO: the terminal's last writer is gone
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        driver = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(config)], cwd=REPO_ROOT, env=env,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
        os.close(slave)
        stdout, _ = driver.communicate(timeout=240)
        reader.join(timeout=10)
    finally:
        os.close(master)
    assert driver.returncode == 0, b"".join(chunks).decode(errors="replace")[-4000:]
    screen = b"".join(chunks).decode(errors="replace")
    assert "\x1b[" in screen                      # rich drew (and redrew) the line with terminal codes
    segments = [part.strip() for part in re.split(r"[\r\n]", ANSI.sub("", screen)) if part.strip()]
    live = [part for part in segments if LINE.match(part)]
    assert live, screen[-3000:]
    assert _progress(live[-1]) == [(2, 16)], live[-3:]              # the final line stays on the screen
    assert b"committed now" in stdout
    assert len(run_records(s3_endpoint, s3_bucket)) == 1
