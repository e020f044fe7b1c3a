"""What a long run shows while it works: rows, tokens/s, units, rejects and an ETA, every few seconds.

On a terminal it is one live line drawn by ``rich`` (redrawn twice a second whether or not a batch
arrived); elsewhere (a job log, a file, a pipe) a plain line every ``interval`` seconds, with no
ANSI codes: 10 s unless ``CORPUS_EMBED_PROGRESS_INTERVAL`` (seconds, e.g. ``2`` or ``0.5``) says
otherwise. Updates come as each staged batch is accounted for, not only when a unit commits.

The ETA comes from bytes: the run knows every pending unit's shard size; bytes done are the
finished units' sizes plus the in-flight units' rows times the bytes per row seen so far. Until
the first unit finishes there is no bytes-per-row figure, and no ETA.
"""
from __future__ import annotations

import math
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import IO, Any


INTERVAL_ENV = "CORPUS_EMBED_PROGRESS_INTERVAL"
DEFAULT_INTERVAL = 10.0


def interval_from_env(stream: IO[str] | None = None) -> float:
    """Seconds between plain progress lines: ``CORPUS_EMBED_PROGRESS_INTERVAL`` if it is a positive
    number, else 10 (a bad value is named on ``stream`` and ignored: progress never stops a run)."""
    raw = os.environ.get(INTERVAL_ENV, "").strip()
    if not raw:
        return DEFAULT_INTERVAL
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if math.isfinite(value) and value > 0:
        return value
    print(f"[corpus-embed] {INTERVAL_ENV}={raw!r} is not a positive number of seconds; using {DEFAULT_INTERVAL:g}",
          file=stream or sys.stderr, flush=True)
    return DEFAULT_INTERVAL


@dataclass
class Counts:
    units_total: int = 0
    units_done: int = 0
    units_failed: int = 0
    rows: int = 0
    rows_rejected: int = 0
    tokens: int = 0
    bytes_total: int = 0
    bytes_finished: int = 0          # sizes of finished units
    rows_finished: int = 0           # rows of finished units
    rows_in_flight: int = 0          # rows of units still running


class Progress:
    """Counts a run's progress and shows it; ``close()`` leaves the last state on screen."""

    def __init__(self, units_total: int, bytes_total: int, stream: IO[str] | None = None,
                 interval: float | None = None, enabled: bool = True):
        self.counts = Counts(units_total=units_total, bytes_total=bytes_total)
        self.stream = stream or sys.stderr
        if interval is None:
            interval = interval_from_env(self.stream) if enabled else DEFAULT_INTERVAL
        self.interval = interval
        self.start = time.monotonic()
        self.first_rows_at: float | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._live: Any = None
        self._thread: threading.Thread | None = None
        if not enabled:
            return
        if getattr(self.stream, "isatty", lambda: False)():
            self._start_live()
        else:
            self._thread = threading.Thread(target=self._plain_loop, name="corpus-embed-progress", daemon=True)
            self._thread.start()

    # -- counting ------------------------------------------------------------------------------
    def rows(self, rows: int, rejected: int, tokens: int) -> None:
        with self._lock:
            if rows and self.first_rows_at is None:
                self.first_rows_at = time.monotonic() - self.start
            self.counts.rows += rows
            self.counts.rows_in_flight += rows
            self.counts.rows_rejected += rejected
            self.counts.tokens += tokens

    def unit_finished(self, size: int, rows: int, failed: bool = False) -> None:
        with self._lock:
            counts = self.counts
            counts.units_failed += failed
            counts.units_done += not failed
            counts.bytes_finished += size
            counts.rows_finished += rows
            counts.rows_in_flight = max(0, counts.rows_in_flight - rows)

    # -- showing -------------------------------------------------------------------------------
    def line(self) -> str:
        with self._lock:
            counts = self.counts
            elapsed = max(time.monotonic() - self.start, 1e-9)
            eta = self._eta(elapsed)
        failed = f", {counts.units_failed} failed" if counts.units_failed else ""
        return (f"[corpus-embed] units {counts.units_done}/{counts.units_total}{failed}, rows {counts.rows:,} "
                f"({counts.rows / elapsed:,.1f}/s), tokens/s {counts.tokens / elapsed:,.0f}, "
                f"rejects {counts.rows_rejected:,}, {elapsed:,.0f} s{eta}")

    def _eta(self, elapsed: float) -> str:
        counts = self.counts
        if not counts.bytes_total or not counts.rows_finished:
            return ", ETA after the first unit" if counts.units_total > counts.units_done + counts.units_failed else ""
        per_row = counts.bytes_finished / counts.rows_finished
        done = min(counts.bytes_total, counts.bytes_finished + counts.rows_in_flight * per_row)
        if done <= 0:
            return ""
        remaining = elapsed * (counts.bytes_total - done) / done
        return f", {done / counts.bytes_total:.0%} of bytes, ETA {remaining:,.0f} s"

    def _start_live(self) -> None:
        from rich.console import Console
        from rich.live import Live
        from rich.text import Text

        class _Line:
            def __init__(self, owner: "Progress"):
                self.owner = owner

            def __rich__(self) -> Text:
                return Text(self.owner.line())

        console = Console(file=self.stream)
        self._live = Live(_Line(self), console=console, refresh_per_second=2, transient=False)
        self._live.start()

    def _plain_loop(self) -> None:
        while not self._stop.wait(self.interval):
            print(self.line(), file=self.stream, flush=True)

    def close(self) -> None:
        self._stop.set()
        if self._live is not None:
            self._live.stop()
        elif self._thread is not None:
            print(self.line(), file=self.stream, flush=True)
