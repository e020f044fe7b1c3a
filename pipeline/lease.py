"""One writer per output: a lease object under ``_``, taken atomically and kept alive by a heartbeat.

Two runs on one output would delete each other's staging and embed everything twice (two cron
entries, a retried ``ray job submit``, an operator rerunning a job that looks stuck). So a run
holds ``_lease.json`` (run id, host, pid, start time, heartbeat) from before its first write to
its end:

- **Taking it** is an exclusive create: ``O_CREAT|O_EXCL`` on local disks, a conditional PUT
  (``If-None-Match: *``) on S3. Where the store offers neither (GCS through gcsfs) it is
  look-then-write, which two runs starting in the same instant can race.
- **A held lease** makes a second run exit 2 at once, naming the holder.
- **A dead holder's lease** (heartbeat older than ``lease_timeout_s``, or at once when the holder
  ran on this host and its process is gone) is taken over by a compare-and-swap on the version the
  taker read (``If-Match: <etag>`` on S3; compare-then-rename
  on local disks), so of two runs taking over together exactly one wins; the run says so.
- **The heartbeat** rewrites the lease by compare-and-swap every ``timeout / 4`` seconds. If it
  finds the lease taken (this run was stopped longer than the timeout), the run stops before its
  next publish: ``check()`` raises, and nothing more is committed.

Heartbeats compare wall clocks of different hosts: keep ``lease_timeout_s`` well above clock skew.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from pipeline.errors import UserError
from pipeline.layout import LEASE
from pipeline.storage import Folder


class LeaseHeldError(UserError):
    """Another live run holds the output."""


class LeaseLostError(RuntimeError):
    """This run's lease was taken over (its heartbeat stopped for longer than the timeout)."""


@dataclass
class LeaseInfo:
    run_id: str
    host: str
    pid: int
    started_at: float
    heartbeat_at: float
    timeout_s: float

    def age(self, now: float | None = None) -> float:
        return max(0.0, (now or time.time()) - self.heartbeat_at)

    def dead_here(self) -> bool:
        """Whether the holder ran on this host and its process is gone (a SIGKILLed run, say).

        Such a lease is stale at once: nothing needs to wait for its heartbeat to age.
        """
        if self.host != socket.gethostname() or self.pid <= 0 or self.pid == os.getpid():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def live(self, timeout_s: float) -> bool:
        """Whether the holder still counts as running: a fresh heartbeat and not known dead."""
        return self.age() < max(self.timeout_s, timeout_s) and not self.dead_here()

    def describe(self) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started_at))
        return (f"run {self.run_id} (host {self.host}, pid {self.pid}, started {started}, "
                f"last heartbeat {self.age():.0f} s ago)")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "LeaseInfo":
        return cls(**{key: data[key] for key in cls.__dataclass_fields__})


def read_lease(output: Folder) -> tuple[LeaseInfo | None, str | None]:
    """The current lease and its version token; (None, None) when there is none.

    A lease being written (empty or half-written JSON) counts as fresh, held by an unknown run.
    """
    token = output.version_token(LEASE)
    if token is None:
        return None, None
    try:
        return LeaseInfo.from_json(json.loads(output.read_bytes(LEASE))), token
    except FileNotFoundError:
        return None, None
    except (ValueError, KeyError, TypeError):
        now = time.time()
        return LeaseInfo("(being written)", "?", 0, now, now, 0.0), token


class Lease:
    """This run's lease on ``output``: ``acquire()``, then ``check()`` before each publish, ``release()``."""

    def __init__(self, output: Folder, run_id: str, timeout_s: float):
        self.output = output
        now = time.time()
        self.info = LeaseInfo(run_id, socket.gethostname(), os.getpid(), now, now, timeout_s)
        self.interval = max(0.5, min(30.0, timeout_s / 4))
        self.taken_over: LeaseInfo | None = None
        self._token: str | None = None
        self._lost = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _payload(self) -> bytes:
        return json.dumps(asdict(self.info), sort_keys=True).encode()

    def acquire(self) -> "Lease":
        """Take the lease, or take over a dead holder's; raises ``LeaseHeldError`` if a live run holds it."""
        for _ in range(5):
            self.info.heartbeat_at = time.time()
            token = self.output.create_exclusive(LEASE, self._payload())
            if token is not None:
                return self._held(token)
            holder, held_token = read_lease(self.output)
            if holder is None:
                continue                                   # released in between: try again
            if holder.live(self.info.timeout_s):
                raise LeaseHeldError(
                    f"output {self.output.url!r} is being written by {holder.describe()}; wait for it to finish, "
                    f"or if it died, run again after its lease expires ({self.info.timeout_s:.0f} s after its last "
                    f"heartbeat; lease_timeout_s)"
                )
            self.info.heartbeat_at = time.time()
            token = self.output.replace_if(LEASE, self._payload(), held_token or "")
            if token is not None:
                self.taken_over = holder
                return self._held(token)
            time.sleep(0.2)                               # another run took it over first: look again
        holder, _ = read_lease(self.output)
        raise LeaseHeldError(f"output {self.output.url!r} is being written by "
                             f"{holder.describe() if holder else 'another run'}; wait for it to finish")

    def _held(self, token: str) -> "Lease":
        self._token = token
        self._thread = threading.Thread(target=self._beat, name="corpus-embed-lease", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                if self._lost:
                    return
                self.info.heartbeat_at = time.time()
                try:
                    token = self.output.replace_if(LEASE, self._payload(), self._token or "")
                except Exception:  # noqa: BLE001 - a failed heartbeat is retried; expiry needs many
                    continue
                if token is None:
                    self._lost = True
                    return
                self._token = token

    def check(self) -> None:
        """Raise ``LeaseLostError`` if another run has taken the lease over (checked against the store)."""
        with self._lock:
            if not self._lost and self.output.version_token(LEASE) != self._token:
                self._lost = True
            if self._lost:
                holder, _ = read_lease(self.output)
                raise LeaseLostError(f"this run's lease on {self.output.url!r} was taken over by "
                                     f"{holder.describe() if holder else 'another run'}; stopping without "
                                     f"committing more")

    def release(self) -> None:
        """Stop the heartbeat and delete the lease if it is still this run's."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            if not self._lost and self._token is not None and self.output.version_token(LEASE) == self._token:
                self.output.remove(LEASE)
            self._lost = True

    def __enter__(self) -> "Lease":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
