"""The two environment settings of a run on a cluster, without Ray: the progress interval and the
Ray Data block size. Bad values are named and ignored (they change how often progress prints and
how work is cut, never what is written)."""
from __future__ import annotations

import io
import re
import time

import pytest

from pipeline.progress import DEFAULT_INTERVAL, INTERVAL_ENV, Progress, interval_from_env
from pipeline.ray_pipeline import BLOCK_BYTES, BLOCK_BYTES_ENV, block_bytes


@pytest.mark.parametrize(("raw", "expected"), [(None, DEFAULT_INTERVAL), ("2", 2.0), (" 0.5 ", 0.5)])
def test_progress_interval_from_the_environment(monkeypatch, raw, expected) -> None:
    if raw is None:
        monkeypatch.delenv(INTERVAL_ENV, raising=False)
    else:
        monkeypatch.setenv(INTERVAL_ENV, raw)
    stream = io.StringIO()
    assert interval_from_env(stream) == expected and stream.getvalue() == ""


@pytest.mark.parametrize("raw", ["soon", "0", "-1", "nan", "inf"])
def test_a_bad_progress_interval_is_named_and_ignored(monkeypatch, raw) -> None:
    monkeypatch.setenv(INTERVAL_ENV, raw)
    stream = io.StringIO()
    assert interval_from_env(stream) == DEFAULT_INTERVAL
    assert INTERVAL_ENV in stream.getvalue() and repr(raw) in stream.getvalue()


def test_plain_lines_at_the_interval_with_rows_before_any_unit(monkeypatch) -> None:
    monkeypatch.setenv(INTERVAL_ENV, "0.05")
    stream = io.StringIO()                        # not a terminal: plain lines
    progress = Progress(units_total=2, bytes_total=1000, stream=stream)
    progress.rows(7, 0, 70)
    time.sleep(0.3)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 3, lines
    assert all(re.match(r"^\[corpus-embed\] units 0/2, rows 7 \(", line) for line in lines), lines
    assert "\x1b" not in stream.getvalue()


def test_block_bytes_from_the_environment(monkeypatch, capsys) -> None:
    monkeypatch.delenv(BLOCK_BYTES_ENV, raising=False)
    assert block_bytes() == BLOCK_BYTES == 4 * 1024 * 1024
    monkeypatch.setenv(BLOCK_BYTES_ENV, "16384")
    assert block_bytes() == 16384
    monkeypatch.setenv(BLOCK_BYTES_ENV, "4MB")
    assert block_bytes() == BLOCK_BYTES
    assert BLOCK_BYTES_ENV in capsys.readouterr().err
