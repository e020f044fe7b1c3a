"""A real Ray cluster of several nodes on one machine: `ray start --head` plus `ray start --address=...`.

Each node is its own `ray start --block` process in its own process group (``start_new_session``),
with its own CPUs, a custom resource named after the node (``{"node_head": 1}``, ``{"node_a": 1}``)
so that placement can be forced and checked, its own ``--temp-dir`` and its own free ports: it never
meets the other Rays that tests start concurrently on the machine. The GCS, raylet and agents
stay in the node's process group; the raylet puts each worker and actor in a group of its own, so
a node's processes are its group plus the raylet's descendants. Killing those at once is pulling
the node's plug, and stopping the cluster is `ray stop` for these nodes only: SIGTERM, a grace
period, then SIGKILL.

Ray turns ``--node-ip-address=127.0.0.1`` into the machine's own address for a multi-node cluster
(``ray._private.services.resolve_ip_for_localhost``), so its nodes talk over that interface; nothing
leaves the machine. The dashboard (the job server and the state API read here) and the GCS address
the drivers get are on 127.0.0.1.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import REPO_ROOT, free_ports

# Ray's unix sockets live under the temp dir, and a socket path is limited to ~107 bytes.
MAX_TEMP_ROOT = 40
OBJECT_STORE_BYTES = 150 * 1024 * 1024
# Ray Data's own setting: an actor pool's operator starts once its ``min_size`` actors are up. Without
# it the first actor to load its model takes all of a small test corpus before the other is ready
# (on a loaded 2-core machine loading takes 10-30 s), and where the actors ran would be a race. Only
# the tests set it; on a real cluster an actor that is slow to start simply joins the work late.
WAIT_FOR_ACTORS = {"RAY_DATA_DEFAULT_WAIT_FOR_MIN_ACTORS_S": "600"}


def ray_bin() -> str:
    beside = Path(sys.executable).with_name("ray")
    return str(beside) if beside.exists() else shutil.which("ray") or "ray"


def node_env() -> dict[str, str]:
    """What every node (and so every worker and actor) runs with: this checkout importable, offline, quiet."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PATH": f"{Path(ray_bin()).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])),
           **WAIT_FOR_ACTORS}
    env.pop("RAY_ADDRESS", None)
    return env


@dataclass
class RayNode:
    name: str
    num_cpus: int
    resources: dict[str, float]
    temp_dir: Path
    log_path: Path
    process: subprocess.Popen
    head: bool = False
    node_id: str = ""
    killed: bool = False

    @property
    def pgid(self) -> int:
        return self.process.pid       # start_new_session: the `ray start` process leads its own group

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class LocalRayCluster:
    """Nodes are added one by one; ``stop()`` ends every process of every node, even after a failure."""

    root: Path
    nodes: list[RayNode] = field(default_factory=list)
    gcs_port: int = 0
    dashboard_port: int = 0

    def __post_init__(self) -> None:
        self._known: set[tuple[int, int]] = set()     # (pid, start time) of processes seen as ours
        self._ports_given: set[int] = set()           # every port handed to a node of this cluster
        if len(str(self.root)) > MAX_TEMP_ROOT:    # pytest's tmp paths can be long: keep socket paths short
            self.root = Path(tempfile.mkdtemp(prefix="ce-rc-", dir="/tmp"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.env = node_env()

    # -- addresses --------------------------------------------------------------------------------
    @property
    def address(self) -> str:
        """The GCS address a driver joins with ``RAY_ADDRESS``."""
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def head(self) -> RayNode:
        return self.nodes[0]

    def node(self, name: str) -> RayNode:
        return next(node for node in self.nodes if node.name == name)

    # -- starting ---------------------------------------------------------------------------------
    def _ports(self, count: int) -> list[int]:
        """Ports no component of this cluster was given yet: a node binds its ports only once it has
        started, so the OS would otherwise hand one out again (two components on one port: exit 1)."""
        ports = free_ports(count, exclude=self._ports_given)
        self._ports_given.update(ports)
        return ports

    def _common_args(self, node_dir: Path, num_cpus: int, resources: dict[str, float]) -> list[str]:
        node_manager, object_manager, metrics, agent_http, agent_grpc, runtime_env = self._ports(6)
        return ["--block", "--node-ip-address=127.0.0.1", f"--num-cpus={num_cpus}", "--num-gpus=0",
                f"--resources={json.dumps(resources)}", f"--temp-dir={node_dir}",
                f"--object-store-memory={OBJECT_STORE_BYTES}", "--disable-usage-stats",
                f"--node-manager-port={node_manager}", f"--object-manager-port={object_manager}",
                f"--metrics-export-port={metrics}", f"--dashboard-agent-listen-port={agent_http}",
                f"--dashboard-agent-grpc-port={agent_grpc}", f"--runtime-env-agent-port={runtime_env}",
                "--min-worker-port=0", "--max-worker-port=0"]     # 0: workers take ports the OS hands out

    def _spawn(self, name: str, args: list[str], num_cpus: int, resources: dict[str, float], head: bool) -> RayNode:
        node_dir = self.root / name
        node_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.root / f"{name}.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen([ray_bin(), "start", *args], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.root)
        node = RayNode(name, num_cpus, resources, node_dir, log_path, process, head=head)
        self.nodes.append(node)
        return node

    def start_head(self, num_cpus: int = 1, name: str = "head", timeout: float = 180.0) -> RayNode:
        assert not self.nodes, "the head starts first"
        self.gcs_port, self.dashboard_port, client_server = self._ports(3)
        resources = {f"node_{name}": 1.0}
        args = ["--head", f"--port={self.gcs_port}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}", f"--ray-client-server-port={client_server}",
                *self._common_args(self.root / name, num_cpus, resources)]
        node = self._spawn(name, args, num_cpus, resources, head=True)
        self._wait(node, timeout)
        return node

    def add_node(self, name: str, num_cpus: int = 1, timeout: float = 120.0) -> RayNode:
        """A worker node joining the head; returns once the GCS lists it alive (its ``node_id`` set)."""
        resources = {f"node_{name}": 1.0}
        args = [f"--address={self.address}", *self._common_args(self.root / name, num_cpus, resources)]
        node = self._spawn(name, args, num_cpus, resources, head=False)
        self._wait(node, timeout)
        return node

    def _wait(self, node: RayNode, timeout: float) -> None:
        """Until the state API lists the node alive (for the head: until the job server answers too)."""
        deadline = time.monotonic() + timeout
        resource = next(iter(node.resources))
        while time.monotonic() < deadline:
            if node.process.poll() is not None:
                raise RuntimeError(f"ray start for node {node.name} exited with {node.process.returncode}:\n"
                                   f"{node.log()[-4000:]}")
            try:
                for info in self.alive_nodes():
                    if resource in info.get("resources_total", {}):
                        node.node_id = info["node_id"]
                        if not node.head or self._get("/api/version"):
                            return
            except OSError:
                pass
            time.sleep(1)
        raise TimeoutError(f"node {node.name} not alive after {timeout:.0f} s:\n{node.log()[-4000:]}")

    # -- looking ----------------------------------------------------------------------------------
    def _get(self, path: str) -> dict:
        with urllib.request.urlopen(f"{self.dashboard}{path}", timeout=10) as response:
            return json.loads(response.read())

    def alive_nodes(self) -> list[dict]:
        """The GCS's alive nodes, from the dashboard's state API."""
        data = self._get("/api/v0/nodes?limit=100&detail=true")
        return [node for node in data["data"]["result"]["result"] if node.get("state") == "ALIVE"]

    def actors(self, class_name: str = "", state: str = "ALIVE") -> list[dict]:
        """Actors (their ``node_id``, ``class_name``, ``state``) from the state API."""
        data = self._get("/api/v0/actors?limit=1000&detail=true")
        return [actor for actor in data["data"]["result"]["result"]
                if (not state or actor.get("state") == state) and class_name in (actor.get("class_name") or "")]

    def wait_dead(self, node: RayNode, timeout: float = 90.0) -> None:
        """Until the GCS has noticed that a killed node is gone (its health checks failed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if node.node_id not in {info["node_id"] for info in self.alive_nodes()}:
                return
            time.sleep(1)
        raise TimeoutError(f"the GCS still lists node {node.name} alive {timeout:.0f} s after it was killed")

    # -- stopping ---------------------------------------------------------------------------------
    def _running(self) -> list[RayNode]:
        """Nodes whose `ray start` still runs: its pid, and so its process group's id, is still ours
        (``poll`` reaps a dead one, after which the number may be reused by anyone)."""
        return [node for node in self.nodes if node.process.poll() is None]

    def kill(self, node: RayNode) -> None:
        """SIGKILL the node: its process group and its workers' and actors' groups, at once."""
        if node.process.poll() is None:
            table = _process_table()
            pids = {pid for pid, info in table.items() if info[1] == node.pgid} | _descendants(table, node.pgid)
            _signal_group(node.pgid, signal.SIGKILL)
            for pid in pids:
                _signal(pid, signal.SIGKILL)
        node.killed = True
        try:
            node.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def stop(self, grace: float = 8.0) -> None:
        """`ray stop` for these nodes: SIGTERM to every group, a grace period, then SIGKILL what is left."""
        table = _process_table()              # workers are found through their parents while those live
        self._known = {(pid, table[pid][3]) for pid in self._own_pids() if pid in table}
        for node in reversed(self._running()):
            _signal_group(node.pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and self._own_pids():
            time.sleep(0.5)
        for _ in range(3):
            pids = self._own_pids()
            if not pids:
                break
            for node in self._running():
                _signal_group(node.pgid, signal.SIGKILL)
            for pid in pids:
                _signal(pid, signal.SIGKILL)
            time.sleep(1)
        for node in self.nodes:
            try:
                node.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        leftovers = self._own_pids()
        shutil.rmtree(self.root, ignore_errors=True)
        assert not leftovers, f"Ray processes still alive after stop: {sorted(leftovers)}"

    def _own_pids(self) -> set[int]:
        """Live processes of our nodes: in their process groups, descending from them, naming our temp
        dir on their command line, or seen as theirs before (a worker orphaned by its raylet)."""
        table = _process_table()
        running = self._running()
        groups = {node.pgid for node in running}
        marker = str(self.root)
        found = {pid for pid, (_, pgid, cmdline, _) in table.items() if pgid in groups or marker in cmdline}
        for node in running:
            found |= _descendants(table, node.pgid)
        found |= {pid for pid, started in self._known if pid in table and table[pid][3] == started}
        found.discard(os.getpid())
        return found


def _process_table() -> dict[int, tuple[int, int, str, int]]:
    """Live (not zombie) processes: pid -> (parent pid, process group, command line, start time)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        state, ppid, pgid, started = fields[0], fields[1], fields[2], fields[19]
        if state != "Z":
            table[int(entry.name)] = (int(ppid), int(pgid), cmdline, int(started))
    return table


def _descendants(table: dict[int, tuple[int, int, str, int]], root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, *_) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, stack = set(), [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass
