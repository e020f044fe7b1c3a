"""``corpus-embed run`` as the benches time it: a local Ray, one job config, one timed run.

Shared by ``bench.run`` (CPU ratios) and ``bench.gpu`` (the GPU table). A run goes through
``pipeline.run.run`` exactly as the command line does (plan, lease, Ray Data, commit), on its own
output folder (a run takes a lease on its output, so two runs never share one).

The steady-state rate of a run is read from its commits: the documents committed after the first
burst of commits (the units the first actor batch completed: commits less than ``BURST_GAP``
apart, which the driver makes in one go), over the time since that burst.
Start-up (Ray init, actor start, model load, the first batch) is given apart:
``seconds_to_first_rows`` (the first embedded rows back at the driver) and
``seconds_to_first_commit``.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

# The stack every document-level comparison uses besides the default (sentence_transformer on the
# packaged MiniLM): the old default, flair's TransformerWordEmbeddings with mean subtoken pooling
# and mean document pooling, embedding every piece in 512-piece windows that overlap by half.
TRANSFORMER_STACK: list[dict[str, Any]] = [{"transformer": {"layers": "-1", "subtoken_pooling": "mean"}}]
TRANSFORMER_POOLING = "mean"
# Commits closer than this belong to one burst (one writer batch: the driver commits its units one
# after the other, milliseconds apart); units of separate actor batches come further apart.
BURST_GAP = 0.1


def log(message: str) -> None:
    import sys

    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def job_config(input_path: Path, output_path: Path, resources: dict[str, Any], dtype: str = "float32",
               stack: list[dict[str, Any]] | None = None, pooling: str | None = None) -> Any:
    """A ``JobConfig`` for JSONL shards with an ``id`` field; ``stack`` None is the default stack."""
    from pipeline.config import parse_config

    data: dict[str, Any] = {"input": {"path": str(input_path), "id_field": "id"},
                            "output": {"path": str(output_path), "dtype": dtype}, "resources": resources}
    if stack is not None:
        data["stack"] = stack
    if pooling is not None:
        data["pooling"] = pooling
    return parse_config(data)


def start_ray(num_cpus: int | None = None) -> float:
    """A fresh local Ray for the pipeline runs (one already up is reused); returns its start-up seconds.

    Workers run at the driver's priority (``worker_niceness`` 0; Ray's default nices them to 15):
    the in-process peers run at normal priority, and on a shared machine a niced actor would be
    measured against everyone else's load rather than against the peers. ``pipeline.run`` finds
    Ray initialised and uses it, as it would a cluster.
    """
    import ray

    if ray.is_initialized():
        return 0.0
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    started = time.perf_counter()
    ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
             logging_level=logging.WARNING, log_to_driver=False, _system_config={"worker_niceness": 0})
    import ray.data  # noqa: F401 - configures its loggers on import: quiet them after that

    for name in ("ray", "ray.data", "ray.data._internal"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return time.perf_counter() - started


def stop_ray() -> None:
    with contextlib.suppress(Exception):
        import ray

        ray.shutdown()


class CpuSampler:
    """CPU seconds of this process and its descendants (our local Ray), by role, sampled while a run lasts.

    A Ray worker's role is read from its process title (``ray::MapWorker(...StagingEmbeddingActor)``,
    ``ray::MapBatches(_read_units)``...) at each sample, so a worker reused for several tasks is split
    between them (the actor writes its own output: its writes count as the actor's). Processes that exit between samples lose at most one interval.
    """

    def __init__(self, interval: float = 0.2, enabled: bool = True):
        self.enabled = enabled
        self.interval = interval
        self.last: dict[int, float] = {}
        self.by_role: dict[str, float] = {}
        self.other_names: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._base = 0.0
        if enabled:
            import psutil

            self.psutil = psutil
            self.me = psutil.Process()

    @staticmethod
    def role(name: str) -> str:
        if "EmbeddingActor" in name:
            return "embedding actor"
        if "_read_units" in name:
            return "read tasks"
        if name.startswith("ray::IDLE") or name.startswith("ray::MapBatches") or name.startswith("ray::ReadRange"):
            return "Ray workers between tasks (start-up, idle)"
        if "default_worker.py" in name:
            return "Ray workers between tasks (start-up, idle)"
        if name.startswith("ray::") or any(key in name for key in ("raylet", "gcs_server", "dashboard", "log_monitor",
                                                                   "monitor.py", "runtime_env")):
            return "Ray daemons (raylet, GCS, agents, stats actors)"
        return "other"

    def _sample(self) -> None:
        procs = [self.me]
        with contextlib.suppress(self.psutil.Error):
            procs += self.me.children(recursive=True)
        for proc in procs:
            try:
                times = proc.cpu_times()
                total = times.user + times.system
                name = ("driver (run loop, Ray Data executor)" if proc.pid == self.me.pid
                        else self.role(" ".join(proc.cmdline()[:3]) or proc.name()))
            except self.psutil.Error:
                continue
            if name == "other":
                with contextlib.suppress(self.psutil.Error):
                    self.other_names.add(" ".join(proc.cmdline()[:3])[:120])
            delta = total - self.last.get(proc.pid, 0.0 if proc.pid != self.me.pid else self._base)
            self.last[proc.pid] = total
            if delta > 0:
                self.by_role[name] = self.by_role.get(name, 0.0) + delta

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "CpuSampler":
        if not self.enabled:
            return self
        times = self.me.cpu_times()
        self._base = times.user + times.system
        # Children alive before the run (an idle Ray from a previous run) count from now on.
        with contextlib.suppress(self.psutil.Error):
            for proc in self.me.children(recursive=True):
                with contextlib.suppress(self.psutil.Error):
                    t = proc.cpu_times()
                    self.last[proc.pid] = t.user + t.system
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if not self.enabled:
            return
        self._stop.set()
        self._thread.join()
        self._sample()


def steady_state(commits: list[tuple[float, str]], rows: dict[str, int], burst_gap: float = BURST_GAP,
                 skip_share: float = 0.0) -> dict[str, Any]:
    """Docs and seconds after the first burst of commits (commits closer than ``burst_gap`` s).

    ``commits`` are (monotonic time, unit key) in commit order; ``rows`` the rows read per unit.
    ``skip_share`` > 0 starts the clock later: at the burst that brings the committed documents to
    that share of the run's. Work an actor did before the first commit (bundles it held at once,
    outputs waiting to be written) then falls outside the window instead of inflating the rate.
    With a single burst there is no steady state: docs/s is None.
    """
    total = sum(rows[key] for _, key in commits)
    first_burst_end = commits[0][0]
    done = rows[commits[0][1]]
    index = 1
    while index < len(commits) and (commits[index][0] - first_burst_end <= burst_gap or done < skip_share * total):
        first_burst_end = commits[index][0]
        done += rows[commits[index][1]]
        index += 1
    later = commits[index:]
    docs = sum(rows[key] for _, key in later)
    seconds = commits[-1][0] - first_burst_end if later else 0.0
    return {"steady_docs": docs, "steady_seconds": seconds, "steady_docs_per_s": docs / seconds if seconds > 0 else None,
            "units": len(commits), "units_in_first_burst": index}


def pipeline_run(name: str, input_path: Path, output_path: Path, resources: dict[str, Any], dtype: str = "float32",
                 stack: list[dict[str, Any]] | None = None, pooling: str | None = None, sample_cpu: bool = True,
                 burst_gap: float = BURST_GAP, skip_share: float = 0.0) -> dict[str, Any]:
    """One ``corpus-embed run`` via ``pipeline.run.run`` on a fresh output; its timings and CPU by role."""
    from pipeline.ledger import Ledger
    from pipeline.plan import RunOptions
    from pipeline.run import run
    from pipeline.storage import Folder

    config = job_config(input_path, output_path, resources, dtype, stack, pooling)
    commits: list[tuple[float, str]] = []
    kinds = "+".join(spec.kind for spec in config.specs)
    log(f"pipeline run {name}: {kinds}, {resources}, {dtype}")
    with CpuSampler(enabled=sample_cpu) as cpu:
        started = time.monotonic()
        summary = run(config, RunOptions(overwrite=True), progress=False,
                      on_commit=lambda key: commits.append((time.monotonic(), key)))
        ended = time.monotonic()
    if not summary.ok or not commits:
        raise RuntimeError(f"pipeline run {name} failed: " + " | ".join(summary.lines()))
    ledger = Ledger(Folder(str(output_path)))
    rows = {record.unit: record.rows_in for record in ledger.read(list(ledger.committed().values()))}
    data_bytes = sum(p.stat().st_size for p in (Path(output_path) / "data").rglob("*.parquet"))
    result = {
        "name": name, "stack": config.stack_config(), "pooling": config.token_pooling, "resources": resources,
        "dtype": dtype, "docs": summary.rows_in, "tokens": summary.tokens,
        "seconds_total": ended - started, "run_seconds_total": summary.seconds_total,
        "seconds_to_first_rows": summary.seconds_to_first_rows,
        "seconds_to_first_commit": summary.seconds_to_first_commit,
        **steady_state(commits, rows, burst_gap, skip_share),
        "overall_docs_per_s": summary.rows_in / (ended - started),
        "data_bytes": data_bytes, "bytes_per_doc": data_bytes / max(1, summary.rows_out),
        "nodes": summary.nodes, "run_id": summary.run_id,
        "cpu_seconds_by_role": {k: round(v, 2) for k, v in sorted(cpu.by_role.items(), key=lambda kv: -kv[1])},
        "other_processes": sorted(cpu.other_names),
    }
    steady = f"{result['steady_docs_per_s']:.1f} docs/s steady" if result["steady_docs_per_s"] else "one burst of commits"
    log(f"  {name}: {steady}, first rows {summary.seconds_to_first_rows or 0:.1f} s, first commit "
        f"{summary.seconds_to_first_commit or 0:.1f} s, total {result['seconds_total']:.1f} s")
    return result


def pipeline_vectors(output_path: Path, ids: list[Any]) -> list[Any]:
    """The run's vectors of ``ids``, in that order (float32 numpy arrays)."""
    import numpy as np
    import pyarrow.dataset as pads

    table = pads.dataset(str(Path(output_path) / "data"), format="parquet").to_table(columns=["id", "vector"])
    got = dict(zip(table.column("id").to_pylist(), table.column("vector").to_pylist()))
    return [np.asarray(got[i], dtype=np.float32) for i in ids]


def best_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the highest steady-state rate (noise only ever makes a run slower)."""
    return max(runs, key=lambda r: r["steady_docs_per_s"] or 0.0)
