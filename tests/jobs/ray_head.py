"""A real Ray head for job-submission tests: `ray start --head --block` with its own ports and temp dir.

It must never meet another Ray on the machine (other tests start local Rays concurrently), so every
port Ray would otherwise default (GCS, dashboard, client server, dashboard agent) is a free one picked
here, it binds to 127.0.0.1, and its temp dir is private (which also keeps it out of
/tmp/ray/ray_current_cluster, where a bare ``ray.init()`` would look). It is stopped by signalling
only the processes it started — its own process group, and anything carrying its private temp dir
on the command line — never with ``ray stop``, which stops every Ray on the machine.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from tests.conftest import free_port

VENV_BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin"


def _ray_bin() -> str:
    local = VENV_BIN / "ray"
    return str(local) if local.exists() else shutil.which("ray") or "ray"


class RayHead:
    def __init__(self, num_cpus: int = 2):
        # Short path: Ray's unix sockets live under it and socket paths are limited to ~107 bytes.
        self.temp_dir = tempfile.mkdtemp(prefix="ce-ray-", dir="/tmp")
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"
        self.env = {**os.environ, "PATH": f"{Path(_ray_bin()).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                    "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                    "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
        self.env.pop("RAY_ADDRESS", None)
        self.log_path = Path(self.temp_dir + ".log")
        command = [
            _ray_bin(), "start", "--head", "--block", f"--port={self.gcs_port}", "--node-ip-address=127.0.0.1",
            "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}", "--include-dashboard=true",
            f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
            f"--num-cpus={num_cpus}", "--num-gpus=0", "--disable-usage-stats", f"--temp-dir={self.temp_dir}",
        ]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def wait_ready(self, timeout: float = 180.0) -> None:
        """Until the job server answers (the dashboard starts last), or the head died."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ray start exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            try:
                with urllib.request.urlopen(f"{self.dashboard}/api/version", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(1)
        raise TimeoutError(f"Ray head not ready after {timeout:.0f} s:\n{self.log()[-4000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _own_pids(self) -> set[int]:
        """Live processes of our process group, or with our private temp dir in their command line."""
        found = set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                stat = (entry / "stat").read_text()
                state, _, pgid = stat.rsplit(")", 1)[1].split()[:3]
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if state != "Z" and (int(pgid) == self.process.pid or self.temp_dir in cmdline):
                found.add(int(entry.name))
        return found

    def stop(self, grace: float = 5.0) -> None:
        """What `ray stop` does, limited to our processes: SIGTERM, a short grace period, then SIGKILL."""
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self._own_pids() and time.monotonic() < deadline:
            time.sleep(0.5)
        for _ in range(3):
            if not self._own_pids():
                break
            self._signal_all(signal.SIGKILL)
            time.sleep(1)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        self.log_path.unlink(missing_ok=True)

    def _signal_all(self, signum: int) -> None:
        for pid in self._own_pids():
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass
