"""Benchmarks that print ratios against peers measured in the same process run.

    python -m bench.run [--quick] [--sections doc,job,token,charlm,scaling,profile] [--out bench/results]

Every figure is a ratio against a peer timed in this same run, on the same seeded corpus (built from
examples/corpus, see ``bench.corpus``) and the same packaged model, because absolute timings on a
shared machine are noise. Peers are timed interleaved with ours, repeated, and the best repetition
counts (noise only ever makes a run slower).

1. Document vectors. The headline compares like with like: ``corpus-embed run`` with the default
   stack (``sentence_transformer`` on the packaged MiniLM, which is ``SentenceTransformer.encode``:
   both truncate at 256 pieces) against ``SentenceTransformer.encode`` in-process, in steady state
   and end to end including start-up; the same stack in-process (``TextEmbedder``), bf16, and a
   naive Hugging Face loop. A second block keeps the old transformer stack (flair's
   ``TransformerWordEmbeddings``, mean pooling: every piece embedded in 512-piece windows), with
   its equal-work ``fits:`` rows. Then the pipeline's steady state against the same stack
   in-process (float32 and bf16): what Ray, reading and writing cost or save.
   The pipeline's rate is its steady state: documents committed after the first actor batch's
   commits, over the time since; start-up is reported apart (``bench.runs``).
2. Many short documents: a 12,000-document, 12-shard local job of texts of at most 256 pieces,
   end to end: ``SentenceTransformer.encode`` against ``corpus-embed run``, with the time to the
   first embedded rows and to the first commit.
3. Token vectors: our ``TransformerWordEmbeddings`` against flair's (same model, layers, pooling).
4. Flair char-LM: our ``FlairEmbeddings`` against flair's on a hidden-2048 LM made by flair itself.
5. Scaling: 1 and 2 actors; output bytes per document for float32 and float16.
6. Where the time goes: each stack's run replayed in-process, step by step, and CPU seconds per
   process role of the pipeline runs.

Flair needs transformers < 5, so it runs in its own venv (``bench/peers.sh``) as a subprocess
(``bench/peer_flair.py``) that times itself; when that venv cannot be made the flair rows say so.
Results go to ``bench/results/<date>.json``; the table is printed and stored there too.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import functools
import json
import os
import platform
import shutil
import string
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bench.runs import (TRANSFORMER_POOLING, TRANSFORMER_STACK, best_run, job_config, log, pipeline_run,
                        pipeline_vectors, start_ray, stop_ray)

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
PEERS_VENV = Path(os.environ.get("PEERS_VENV", BENCH / ".peers-venv"))

# Tolerances of the stack's reference tests (tests/fixtures/README.md).
TRANSFORMER_TOL = {"atol": 1e-4, "rtol": 1e-4}
FLAIR_TOL = {"atol": 1e-5, "rtol": 0.0}

MODES = {
    "quick": {"docs": 320, "shards": 8, "reps": 2, "pipeline_reps": 1, "transformer_pipeline_reps": 1, "batch_rows": 40,
              "job_docs": 1200, "job_shards": 12, "job_reps": 1,
              "token_sentences": 200, "charlm_sentences": 100, "peer_reps": 1, "charlm_peer_reps": 1, "sample": 20, "f16_shards": 2,
              "profile_shards": 4},
    "full": {"docs": 1200, "shards": 24, "reps": 2, "pipeline_reps": 2, "transformer_pipeline_reps": 1, "batch_rows": 100,
             "job_docs": 12000, "job_shards": 12, "job_reps": 1,
             "token_sentences": 1000, "charlm_sentences": 1000, "peer_reps": 2, "charlm_peer_reps": 1, "sample": 40,
             "f16_shards": 6, "profile_shards": 8},
}
CHARLM = {"hidden_size": 2048, "nlayers": 1, "embedding_size": 100}
PEER_BATCH = 32  # flair's default mini_batch_size; also the naive loop's and SentenceTransformer's batch
ST_KIND = "sentence_transformer"
TR_KIND = "transformer"
SECTIONS = ("doc", "job", "token", "charlm", "scaling", "profile")


# --------------------------------------------------------------------------- small helpers

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


# --------------------------------------------------------------------------- section 1: document vectors

def model_path() -> str:
    """The packaged all-MiniLM-L6-v2 (the default stack's model and every document peer's)."""
    from actors.stack.registry import resolve_transformer

    return resolve_transformer("default").path


@dataclass(frozen=True)
class StackChoice:
    """A stack of the document benches: config entries (None: the default stack) and pooling."""

    kind: str
    stack: list[dict[str, Any]] | None
    pooling: str | None
    label: str


STACKS = {
    ST_KIND: StackChoice(ST_KIND, None, None, "sentence_transformer stack (the default)"),
    TR_KIND: StackChoice(TR_KIND, TRANSFORMER_STACK, TRANSFORMER_POOLING, "transformer stack"),
}


def stack_config(kind: str, input_path: Path, output_path: Path, resources: dict[str, Any], dtype: str = "float32") -> Any:
    choice = STACKS[kind]
    return job_config(input_path, output_path, resources, dtype, choice.stack, choice.pooling)


def stack_run(kind: str, name: str, input_path: Path, output_path: Path, resources: dict[str, Any],
              dtype: str = "float32") -> dict[str, Any]:
    choice = STACKS[kind]
    return pipeline_run(name, input_path, output_path, resources, dtype, choice.stack, choice.pooling)


def in_process_embedder(config: Any, precision: str = "auto") -> Any:
    """``TextEmbedder`` for the config's stack with the runtime its actors get (no I/O, no Ray)."""
    from actors.embedder import TextEmbedder

    return TextEmbedder(config.specs, config.token_pooling, max_batch_tokens=config.resources.max_batch_tokens,
                        precision=precision)


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


def ratio(value: float | None, base: float | None) -> float | None:
    return value / base if value is not None and base else None


def fmt(value: float | None, spec: str = ".1f", none: str = "—") -> str:
    return format(value, spec) if value is not None else none


def as_ratio(value: float | None) -> str:
    """``1.23x``, or ``—`` when there is no figure (a run that committed in one burst has no steady state)."""
    return f"{value:.2f}x" if value is not None else "—"


def doc_section(report: Report, settings: dict[str, Any], docs: list[dict], workdir: Path) -> None:
    import torch

    from actors.stack.device import cpu_has_native_bf16
    from bench.corpus import write_shards

    texts = [doc["text"] for doc in docs]
    input_path = workdir / "corpus"
    write_shards(docs, input_path, settings["shards"])
    path = model_path()

    headline = headline_resources(settings)
    configs = {kind: stack_config(kind, input_path, workdir / "unused", headline) for kind in STACKS}
    log("loading in-process peers (SentenceTransformer, naive HF loop, our TextEmbedder for both stacks)")
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(path, device="cpu")
    naive = NaiveHF(path)
    ours = {kind: in_process_embedder(config) for kind, config in configs.items()}
    ours_bf16 = {kind: in_process_embedder(config, "bfloat16") for kind, config in configs.items()}
    warm = texts[:16]
    st.encode(warm), naive.encode(warm)
    for embedder in (*ours.values(), *ours_bf16.values()):
        embedder.embed_documents(warm)

    def st_bf16(batch: list[str]) -> np.ndarray:
        # The same lever on the peer's side: its encoder under CPU bf16 autocast.
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return np.asarray(st.encode(batch, batch_size=PEER_BATCH, convert_to_tensor=True).float())

    st_bf16(warm)

    # The documents that both sides embed whole under the transformer stack: at most
    # max_seq_length pieces, one window (the sentence_transformer stack truncates as the peer does).
    tokenizer = ours[TR_KIND].stack.embeddings[0].tokenizer
    fits = [t for t, ids in zip(texts, tokenizer(texts)["input_ids"]) if len(ids) <= st.max_seq_length]
    fits_set = set(fits)
    fits_input = workdir / "corpus-fits"
    write_shards([doc for doc in docs if doc["text"] in fits_set], fits_input, settings["shards"])
    in_process: dict[str, Callable[[], Any]] = {
        "st.encode": lambda: st.encode(texts, batch_size=PEER_BATCH),
        "st.load": lambda: SentenceTransformer(path, device="cpu"),
        "st.encode.bf16": lambda: st_bf16(texts),
        "naive": lambda: naive.encode(texts),
        "st-stack": lambda: ours[ST_KIND].embed_documents(texts),
        "st-stack.bf16": lambda: ours_bf16[ST_KIND].embed_documents(texts),
        "tr-stack": lambda: ours[TR_KIND].embed_documents(texts),
        "tr-stack.bf16": lambda: ours_bf16[TR_KIND].embed_documents(texts),
        "fits: st.encode": lambda: st.encode(fits, batch_size=PEER_BATCH),
        "fits: tr-stack": lambda: ours[TR_KIND].embed_documents(fits),
    }
    times: dict[str, list[float]] = {name: [] for name in in_process}
    outputs: dict[str, Any] = {}
    runs: dict[str, list[dict[str, Any]]] = {"st": [], "st.bf16": [], "tr": [], "tr.bf16": [], "tr.fits": []}
    ray_start = None
    # Rounds alternate in-process peers and pipeline runs, so slow spells of a shared machine hit both.
    rounds = max(settings["reps"], settings["pipeline_reps"], settings["transformer_pipeline_reps"])
    for rep in range(rounds):
        if rep < settings["reps"]:
            log(f"in-process document round {rep + 1}")
            # The naive loop is 5-7x slower than the rest and far behind: one round is enough for it.
            fns = in_process if rep == 0 else {k: v for k, v in in_process.items() if k != "naive"}
            for name, seconds in interleaved(fns, 1, outputs).items():
                times[name] += seconds
        if ray_start is None:
            ray_start = start_ray()
        if rep < settings["pipeline_reps"]:
            runs["st"].append(stack_run(ST_KIND, f"st-{rep + 1}", input_path, workdir / f"out-st-{rep}", headline))
            runs["st.bf16"].append(stack_run(ST_KIND, f"st-bfloat16-{rep + 1}", input_path, workdir / f"out-st-bf16-{rep}",
                                             {**headline, "precision": "bfloat16"}))
        if rep < settings["transformer_pipeline_reps"]:
            runs["tr"].append(stack_run(TR_KIND, f"tr-{rep + 1}", input_path, workdir / f"out-tr-{rep}", headline))
            runs["tr.bf16"].append(stack_run(TR_KIND, f"tr-bfloat16-{rep + 1}", input_path, workdir / f"out-tr-bf16-{rep}",
                                             {**headline, "precision": "bfloat16"}))
            runs["tr.fits"].append(stack_run(TR_KIND, f"tr-fits-{rep + 1}", fits_input, workdir / f"out-tr-fits-{rep}",
                                             headline))
    best = {name: (len(fits) if name.startswith("fits:") else len(texts)) / min(seconds)
            for name, seconds in times.items() if name != "st.load"}
    top = {name: best_run(found) for name, found in runs.items()}
    reference = best["st.encode"]
    st_load = min(times["st.load"])
    st_e2e = len(texts) / (st_load + min(times["st.encode"]))
    pieces = _piece_counts(ours[TR_KIND], texts, st)
    piece_ratio = pieces["ours_window_pieces"] / pieces["st_pieces"]
    threads = actor_threads(headline)
    bf16_native = cpu_has_native_bf16()

    # -- 1. the default stack against SentenceTransformer: identical work
    run = top["st"]
    pipe = run["steady_docs_per_s"]
    e2e = run["docs"] / (ray_start + run["seconds_total"])
    report.add(Row("doc", "corpus-embed run (steady state)", pipe, "docs/s", ratio(pipe, reference),
                   f"1 actor, {headline['cpus_per_actor']:g} CPU, {threads} torch threads, batch_rows {headline['batch_rows']}; "
                   f"first embedded rows {fmt(run['seconds_to_first_rows'])} s, first commit "
                   f"{fmt(run['seconds_to_first_commit'])} s into the run; {as_ratio(ratio(pipe, best['st-stack']))} "
                   "the same stack in-process", {"runs": runs["st"]}))
    report.add(Row("doc", "corpus-embed run, end to end incl. start-up", e2e, "docs/s", ratio(e2e, reference),
                   f"Ray init {ray_start:.1f} s + the whole run {run['seconds_total']:.1f} s (plan, lease, actor start, "
                   f"read, embed, write, commit); {e2e / st_e2e:.2f}x SentenceTransformer load + encode",
                   {"ray_start_seconds": ray_start}))
    run_bf16 = top["st.bf16"]
    pipe_bf16 = run_bf16["steady_docs_per_s"]
    report.add(Row("doc", "corpus-embed run, precision bfloat16", pipe_bf16, "docs/s", ratio(pipe_bf16, reference),
                   f"--set resources.precision=bfloat16 (CPU autocast; this CPU has native bf16: {bf16_native}); "
                   f"{as_ratio(ratio(pipe_bf16, best['st.encode.bf16']))} SentenceTransformer under the same autocast; "
                   f"first commit {fmt(run_bf16['seconds_to_first_commit'])} s", {"runs": runs["st.bf16"]}))
    doc_rows = [
        ("SentenceTransformer.encode", "st.encode", reference,
         f"batch {PEER_BATCH}, length-sorted, truncates at {st.max_seq_length} pieces ({pieces['st_truncated_docs']} of "
         f"{len(texts)} docs cut), as the sentence_transformer stack does"),
        ("SentenceTransformer, load + encode", None, st_e2e,
         f"end to end in-process: model load {st_load:.1f} s (imports excluded) + encode"),
        ("SentenceTransformer.encode, bf16 autocast", "st.encode.bf16", best["st.encode.bf16"],
         "the peer with the same CPU bf16 lever (torch.autocast around encode)"),
        ("naive HF loop", "naive", best["naive"], f"corpus order, batch {PEER_BATCH}, truncates at 512 pieces"),
        ("ours in-process (TextEmbedder)", "st-stack", best["st-stack"],
         f"the run's stack (sentence_transformer, max_batch_tokens {configs[ST_KIND].resources.max_batch_tokens}), "
         "no I/O, no Ray"),
        ("ours in-process, precision bfloat16", "st-stack.bf16", best["st-stack.bf16"],
         "TextEmbedder(precision='bfloat16'), no I/O; "
         f"{best['st-stack.bf16'] / best['st.encode.bf16']:.2f}x SentenceTransformer under the same autocast"),
    ]
    for name, key, rate, note in doc_rows:
        report.add(Row("doc", name, rate, "docs/s", rate / reference, note, {"seconds": times[key]} if key else {}))

    # -- 1b. the transformer stack (every piece, 512 windows), with its equal-work rows
    run_tr, run_tr_bf16, run_fits = top["tr"], top["tr.bf16"], top["tr.fits"]
    pipe_tr, pipe_tr_bf16, pipe_fits = (run_tr["steady_docs_per_s"], run_tr_bf16["steady_docs_per_s"],
                                        run_fits["steady_docs_per_s"])
    fits_reference = best["fits: st.encode"]
    report.add(Row("doc_tr", "corpus-embed run (steady state)", pipe_tr, "docs/s", ratio(pipe_tr, reference),
                   f"--set stack='{json.dumps(TRANSFORMER_STACK)}' pooling=mean; embeds every piece (strided 512 windows): "
                   f"{piece_ratio:.2f}x SentenceTransformer's pieces; {as_ratio(ratio(pipe_tr, reference / piece_ratio))} "
                   f"in WordPieces/s; first commit {fmt(run_tr['seconds_to_first_commit'])} s", {"runs": runs["tr"]}))
    report.add(Row("doc_tr", "corpus-embed run, precision bfloat16", pipe_tr_bf16, "docs/s", ratio(pipe_tr_bf16, reference),
                   f"{as_ratio(ratio(pipe_tr_bf16, best['st.encode.bf16']))} SentenceTransformer under the same autocast; "
                   f"{as_ratio(ratio(pipe_tr_bf16, reference / piece_ratio))} in WordPieces/s", {"runs": runs["tr.bf16"]}))
    report.add(Row("doc_tr", "ours in-process (TextEmbedder)", best["tr-stack"], "docs/s", best["tr-stack"] / reference,
                   f"same stack as the run, no I/O, no Ray; {best['tr-stack'] / reference * piece_ratio:.2f}x in WordPieces/s",
                   {"seconds": times["tr-stack"]}))
    report.add(Row("doc_tr", "ours in-process, precision bfloat16", best["tr-stack.bf16"], "docs/s",
                   best["tr-stack.bf16"] / reference, "TextEmbedder(precision='bfloat16'), no I/O",
                   {"seconds": times["tr-stack.bf16"]}))
    report.add(Row("doc_tr", "fits: SentenceTransformer.encode", fits_reference, "docs/s", None,
                   f"only the {len(fits)} docs of <= {st.max_seq_length} pieces (nothing truncated, one window): "
                   "the reference of the next rows", {"seconds": times["fits: st.encode"]}))
    report.add(Row("doc_tr", "fits: corpus-embed run (steady state)", pipe_fits, "docs/s", ratio(pipe_fits, fits_reference),
                   "end to end on the same docs written as shards: equal work on both sides; ratio vs the fits: reference",
                   {"runs": runs["tr.fits"]}))
    report.add(Row("doc_tr", "fits: ours in-process (TextEmbedder)", best["fits: tr-stack"], "docs/s",
                   best["fits: tr-stack"] / fits_reference,
                   "same docs, no I/O: equal work on both sides; ratio vs the fits: reference",
                   {"seconds": times["fits: tr-stack"]}))

    # -- 1c. what the pipeline costs or saves against the same stack in-process
    for label, pipe_rate, in_rate in (
        ("pipeline steady state vs the same stack in-process, float32", pipe, best["st-stack"]),
        ("pipeline steady state vs the same stack in-process, bfloat16", pipe_bf16, best["st-stack.bf16"]),
        ("transformer stack: pipeline vs in-process, float32", pipe_tr, best["tr-stack"]),
        ("transformer stack: pipeline vs in-process, bfloat16", pipe_tr_bf16, best["tr-stack.bf16"]),
    ):
        report.add(Row("overhead", label, pipe_rate, "docs/s", ratio(pipe_rate, in_rate),
                       f"in-process {in_rate:.1f} docs/s (TextEmbedder, {torch.get_num_threads()} threads; the actor "
                       f"{threads}); above 1: Ray's overlap of reading and writing with embedding pays for its overhead"))

    report.data["doc"] = {
        "docs": len(texts), "docs_within_st_window": len(fits), "pieces": pieces, "piece_ratio_ours_vs_st": piece_ratio,
        "in_process_seconds": times, "pipeline_runs": runs["st"], "bfloat16_runs": runs["st.bf16"],
        "transformer_runs": runs["tr"], "transformer_bfloat16_runs": runs["tr.bf16"], "fits_runs": runs["tr.fits"],
        "ray_start_seconds": ray_start, "headline_resources": headline, "torch_threads_in_process": torch.get_num_threads(),
        "sentence_transformer_load_seconds": times["st.load"],
        "pieces_per_s": {
            "corpus-embed run (steady state)": (pipe or 0.0) * pieces["st_pieces"] / len(texts),
            "SentenceTransformer.encode": reference * pieces["st_pieces"] / len(texts),
            "transformer stack: corpus-embed run (steady state)": (pipe_tr or 0.0) * pieces["ours_window_pieces"] / len(texts),
            "transformer stack: ours in-process": best["tr-stack"] * pieces["ours_window_pieces"] / len(texts),
            "naive HF loop": best["naive"] * pieces["naive_pieces"] / len(texts),
        },
    }

    # Equality: each run's vectors against an in-process computation of the same stack (the timed
    # rounds' last calls), and the default stack against SentenceTransformer itself.
    rng = np.random.default_rng(0)
    sample = sorted(rng.choice(len(docs), size=min(settings["sample"] * 2, len(docs)), replace=False).tolist())
    ids = [docs[i]["id"] for i in sample]
    st_vectors = np.asarray(outputs["st.encode"], dtype=np.float32)
    equality = report.data.setdefault("equality", {})
    precision = report.data.setdefault("precision", {})
    check = list(st_vectors)
    got = list(outputs["st-stack"][0])
    equality["sentence_transformer stack vs SentenceTransformer.encode"] = {
        "sample": len(check), "max_abs_diff": max_abs_diff(got, check), **TRANSFORMER_TOL,
        "equal_within_tolerance": all_close(got, check, **TRANSFORMER_TOL)}
    for kind, key, label in ((ST_KIND, "st", "sentence_transformer"), (TR_KIND, "tr", "transformer stack")):
        exact_all = outputs[f"{key}-stack"][0]
        low_in_process = outputs[f"{key}-stack.bf16"][0]
        expected = list(exact_all[sample])
        got = pipeline_vectors(workdir / f"out-{key}-{runs[key].index(top[key])}", ids)
        equality[f"{label}: pipeline vs in-process TextEmbedder"] = {
            "sample": len(ids), "max_abs_diff": max_abs_diff(got, expected), **TRANSFORMER_TOL,
            "equal_within_tolerance": all_close(got, expected, **TRANSFORMER_TOL)}
        bf16_dir = workdir / f"out-{key}-bf16-{runs[key + '.bf16'].index(top[key + '.bf16'])}"
        low = np.stack(pipeline_vectors(bf16_dir, ids))
        precision[f"{label}: bf16 run vs float32 run"] = {"items": len(ids), **deviation(np.stack(got), low)}
        precision[f"{label}: bf16 vs float32, in-process"] = {
            "items": len(texts), **deviation(exact_all, low_in_process),
            "same_nearest_neighbour": same_nearest_neighbour(exact_all, low_in_process)}
    report.data["_doc_objects"] = {"input_path": input_path}


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
    from types import SimpleNamespace

    import ray

    from pipeline.config import ResourcesConfig
    from pipeline.ray_pipeline import actor_threads as threads_for

    config = ResourcesConfig.model_validate(resources)
    fallback = max(1, math.ceil(config.cpus_per_actor))
    if not ray.is_initialized():
        return fallback
    return threads_for(SimpleNamespace(resources=config)) or fallback


# --------------------------------------------------------------------------- section 2: many short documents

def job_section(report: Report, settings: dict[str, Any], workdir: Path, seed: int) -> None:
    """The issue's job: N short documents (all <= 256 pieces) in 12 local shards, end to end.

    The peer is what a user script does: load the model, ``encode`` the texts (in memory: reading
    the shards is not counted on its side). ``corpus-embed run`` runs with the defaults a user gets
    (1 actor, batch_rows 512) on a fresh local Ray, so that end to end includes Ray's start-up.
    """
    from sentence_transformers import SentenceTransformer

    from bench.corpus import make_short_documents, write_shards

    docs = make_short_documents(settings["job_docs"], seed=seed)
    texts = [doc["text"] for doc in docs]
    input_path = workdir / "corpus-job"
    write_shards(docs, input_path, settings["job_shards"])
    path = model_path()
    log(f"many short documents: {len(docs)} docs in {settings['job_shards']} shards")
    started = time.perf_counter()
    st = SentenceTransformer(path, device="cpu")
    st_load = time.perf_counter() - started
    config = job_config(input_path, workdir / "unused", {})
    ours = in_process_embedder(config)
    st.encode(texts[:16]), ours.embed_documents(texts[:16])
    outputs: dict[str, Any] = {}
    times = interleaved({"st.encode": lambda: st.encode(texts, batch_size=PEER_BATCH),
                         "ours": lambda: ours.embed_documents(texts)}, settings["job_reps"], outputs)
    stop_ray()                       # a fresh Ray: end to end pays its start-up, as a first run does
    ray_start = start_ray()
    runs = [pipeline_run(f"job-{rep + 1}", input_path, workdir / f"out-job-{rep}", {}) for rep in range(settings["job_reps"])]
    run = best_run(runs)
    n = len(texts)
    reference = n / min(times["st.encode"])
    st_e2e = n / (st_load + min(times["st.encode"]))
    ours_rate = n / min(times["ours"])
    e2e = run["docs"] / (ray_start + run["seconds_total"])
    alone = run["docs"] / run["seconds_total"]
    steady = run["steady_docs_per_s"]
    pieces = sum(doc["pieces"] for doc in docs)
    threads = actor_threads({})
    report.add(Row("job", "SentenceTransformer.encode", reference, "docs/s", 1.0,
                   f"batch {PEER_BATCH}, length-sorted, texts in memory; {n} docs of <= 256 pieces "
                   f"(mean {pieces / n:.0f}, max {max(doc['pieces'] for doc in docs)}): nothing truncated"))
    report.add(Row("job", "SentenceTransformer, load + encode", st_e2e, "docs/s", st_e2e / reference,
                   f"model load {st_load:.1f} s (imports excluded) + encode"))
    report.add(Row("job", "ours in-process (TextEmbedder)", ours_rate, "docs/s", ours_rate / reference,
                   "the default stack, no I/O, no Ray"))
    report.add(Row("job", "corpus-embed run, end to end (Ray start + run)", e2e, "docs/s", e2e / reference,
                   f"Ray init {ray_start:.1f} s + run {run['seconds_total']:.1f} s; {e2e / st_e2e:.2f}x "
                   "SentenceTransformer load + encode"))
    report.add(Row("job", "corpus-embed run, the run alone", alone, "docs/s", alone / reference,
                   "plan to last commit, Ray up"))
    report.add(Row("job", "corpus-embed run (steady state)", steady, "docs/s", ratio(steady, reference),
                   f"defaults: 1 actor, batch_rows 512, {threads} torch threads; {as_ratio(ratio(steady, ours_rate))} "
                   "the same stack in-process"))
    report.add(Row("job", "corpus-embed run: time to the first embedded rows", run["seconds_to_first_rows"], "s", None,
                   f"seconds_to_first_rows: the first writer records back at the driver, of {run['seconds_total']:.1f} s; "
                   f"Ray init {ray_start:.1f} s before the run"))
    report.add(Row("job", "corpus-embed run: time to the first commit", run["seconds_to_first_commit"], "s", None,
                   f"seconds_to_first_commit: the first unit published and in the ledger ({run['units']} units, "
                   f"{run['units_in_first_burst']} in the first burst of commits)"))
    rng = np.random.default_rng(1)
    sample = sorted(rng.choice(n, size=min(settings["sample"] * 2, n), replace=False).tolist())
    expected = list(np.asarray(outputs["st.encode"], dtype=np.float32)[sample])
    got = pipeline_vectors(workdir / f"out-job-{runs.index(run)}", [docs[i]["id"] for i in sample])
    report.data.setdefault("equality", {})["many short docs: pipeline vs SentenceTransformer.encode"] = {
        "sample": len(sample), "max_abs_diff": max_abs_diff(got, expected), **TRANSFORMER_TOL,
        "equal_within_tolerance": all_close(got, expected, **TRANSFORMER_TOL)}
    report.data["job"] = {
        "docs": n, "shards": settings["job_shards"], "pieces": pieces, "seed": seed,
        "kinds": {k: sum(d["kind"] == k for d in docs) for k in ("short", "pair", "entry")},
        "sentence_transformer_load_seconds": st_load, "in_process_seconds": times, "ray_start_seconds": ray_start,
        "runs": runs, "seconds_to_first_rows": run["seconds_to_first_rows"],
        "seconds_to_first_commit": run["seconds_to_first_commit"],
        "docs_per_s": {"SentenceTransformer.encode": reference, "SentenceTransformer load + encode": st_e2e,
                       "ours in-process": ours_rate, "corpus-embed run end to end": e2e,
                       "corpus-embed run alone": alone, "corpus-embed run steady": steady},
        "ratio_run_end_to_end_vs_encode": e2e / reference,
    }


# --------------------------------------------------------------------------- section 4: scaling

def scaling_section(report: Report, settings: dict[str, Any], workdir: Path) -> None:
    """1 actor (the headline runs) against 2 actors, on the same shards; then float16 output size.

    All with the default stack (sentence_transformer), as the headline runs.

    Two actors at 1 CPU each would hold both CPUs of a 2-core Ray and starve the read tasks
    (DESIGN.md §10), so there they get 0.75 each.
    """
    input_path = report.data["_doc_objects"]["input_path"]
    cpus = os.cpu_count() or 1
    per_actor = 0.75 if cpus <= 2 else 1.0
    headline = report.data["doc"]["pipeline_runs"]
    one = best_run(headline)
    two_resources = {"actors": 2, "cpus_per_actor": per_actor, "batch_rows": settings["batch_rows"]}
    two = pipeline_run("2 actors", input_path, workdir / "out-scale-2", two_resources)
    base = one["steady_docs_per_s"]
    for result in (one, two):
        resources = result["resources"]
        report.add(Row("scaling", f"{resources['actors']} actor(s) x {resources['cpus_per_actor']:g} CPU, "
                       f"{actor_threads(resources)} torch thread(s) each", result["steady_docs_per_s"], "docs/s",
                       ratio(result["steady_docs_per_s"], base),
                       f"first commit {fmt(result['seconds_to_first_commit'])} s" + (" (headline run)" if result is one else "")))

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

class _TimedCalls:
    """Exclusive-time bookkeeping for one replay: named phases, module hooks and wrapped callables."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}
        self._undo: list[Callable[[], None]] = []

    def add(self, name: str, seconds: float) -> None:
        self.phases[name] = self.phases.get(name, 0.0) + seconds

    @contextlib.contextmanager
    def timed(self, name: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started)

    def hook(self, module: Any, name: str) -> None:
        """Time ``module``'s forward calls (nested calls of the same module are not expected)."""
        started: list[float] = []
        handles = [module.register_forward_pre_hook(lambda *_: started.append(time.perf_counter())),
                   module.register_forward_hook(lambda *_: self.add(name, time.perf_counter() - started.pop()))]
        self._undo += [handle.remove for handle in handles]

    def wrap(self, owner: Any, attribute: str, name: str) -> None:
        """Time every call of ``owner.attribute`` (an instance attribute shadows the method)."""
        inner = getattr(owner, attribute)
        had_own = attribute in vars(owner)

        @functools.wraps(inner)
        def timed_call(*args: Any, **kwargs: Any) -> Any:
            with self.timed(name):
                return inner(*args, **kwargs)

        object.__setattr__(owner, attribute, timed_call)
        self._undo.append(lambda: object.__setattr__(owner, attribute, inner) if had_own else object.__delattr__(owner, attribute))

    def patch(self, module: Any, attribute: str, name: str) -> None:
        """Time every call of the module-level function ``module.attribute``."""
        inner = getattr(module, attribute)

        def timed_call(*args: Any, **kwargs: Any) -> Any:
            with self.timed(name):
                return inner(*args, **kwargs)

        setattr(module, attribute, timed_call)
        self._undo.append(lambda: setattr(module, attribute, inner))

    def undo(self) -> None:
        for step in reversed(self._undo):
            step()
        self._undo.clear()


class _TimedTokenizer:
    """A tokenizer whose calls are timed; everything else goes to the tokenizer itself."""

    def __init__(self, inner: Any, calls: _TimedCalls, name: str):
        self.__dict__.update(_inner=inner, _calls=calls, _name=name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self._calls.timed(self._name):
            return self._inner(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def profile_section(report: Report, settings: dict[str, Any], workdir: Path) -> None:
    report.data["profile"] = {kind: profile_stack(report, settings, workdir, kind) for kind in STACKS}


def profile_stack(report: Report, settings: dict[str, Any], workdir: Path, kind: str) -> dict[str, Any]:
    """The run's steps done in-process and in sequence on the same shards, each timed; the rest is Ray.

    read (``read_unit``) → the actor's ``__call__`` (Arrow → lists, the stack's steps, Arrow table)
    → ``write_parts``. The encoder's forward is timed by hooks; the other steps by wrapping the
    callables the stack goes through. Phases nest, so each is reported as exclusive time.
    """
    import pyarrow as pa
    import torch

    import actors.embedder as embedder_module
    from actors.actor import ActorConfig, EmbeddingActor
    from pipeline.readers import read_unit
    from pipeline.sink import write_parts
    from pipeline.sources import discover_shards
    from pipeline.storage import Folder
    from pipeline.units import plan_units

    input_path = report.data["_doc_objects"]["input_path"]
    resources = headline_resources(settings)
    output = workdir / f"out-profile-{kind}"
    config = stack_config(kind, input_path, output, resources)
    shards, _ = discover_shards(config.input, config.storage)
    units = sorted(plan_units(shards, config.input, config.storage), key=lambda unit: unit.key)[: settings["profile_shards"]]
    calls = _TimedCalls()
    with calls.timed("read (read_unit → Arrow blocks)"):
        blocks = [block for unit in units
                  for block in read_unit(unit, config.input, config.storage, config.resources.read_block_rows)]
    table = pa.concat_tables(blocks)
    threads_before = torch.get_num_threads()
    threads = actor_threads(resources)
    actor = EmbeddingActor(ActorConfig(stack=config.stack_config(), pooling=config.token_pooling, granularity="document",
                                       dtype="float32", precision=config.resources.precision,
                                       max_batch_tokens=config.resources.max_batch_tokens, torch_threads=threads))
    embedder = actor.embedder
    stack = embedder.stack
    calls.wrap(embedder, "embed_documents", "_embed_documents")
    if kind == ST_KIND:
        # sentence-transformers calls the encoder's ``forward`` method itself (no module hooks fire).
        first = stack.model[0]
        calls.wrap(getattr(first, "model", None) or first.auto_model, "forward", "forward (encoder)")
        calls.hook(stack.model, "_model")
        calls.wrap(stack, "_tokenize_all", "tokenization (the model's preprocess)")
        calls.wrap(stack, "_batch_features", "tokenization (the model's preprocess)")
        calls.wrap(stack, "embed_with_counts", "_stack")
    else:
        transformer = stack.embeddings[0]
        calls.hook(transformer.model, "forward (encoder)")
        calls.wrap(stack, "embed", "_stack")
        calls.patch(embedder_module, "tokenize_with_whitespace", "word tokenization (regex)")
        tokenizer = transformer.tokenizer
        transformer.tokenizer = _TimedTokenizer(tokenizer, calls, "WordPiece tokenization")
    outputs = []
    try:
        batch_rows = config.resources.batch_rows
        actor(table.slice(0, min(16, table.num_rows)))  # warm-up, not timed
        read_seconds = calls.phases["read (read_unit → Arrow blocks)"]
        calls.phases = {"read (read_unit → Arrow blocks)": read_seconds}
        with calls.timed("_actor"):
            for start in range(0, table.num_rows, batch_rows):
                outputs.append(actor(table.slice(start, batch_rows)))
    finally:
        calls.undo()
        if kind != ST_KIND:
            transformer.tokenizer = tokenizer
        torch.set_num_threads(threads_before)
    metadata = {"corpus_embed.stack_fingerprint": "bench", "corpus_embed.dtype": "float32",
                "corpus_embed.granularity": "document", "corpus_embed.version": "bench"}
    folder = Folder(str(output))
    with calls.timed("write (write_parts: Parquet zstd to staging)"):
        for out in outputs:
            write_parts(out, folder, "bench", metadata)
    phases = calls.phases
    actor_total = phases.pop("_actor")
    embed_total = phases.pop("_embed_documents")
    stack_total = phases.pop("_stack")
    forward = phases.get("forward (encoder)", 0.0)
    if kind == ST_KIND:
        model_total = phases.pop("_model")
        tokenization = phases.get("tokenization (the model's preprocess)", 0.0)
        phases["pooling, normalisation (the model's modules after the encoder)"] = model_total - forward
        phases["batching, padding, reordering (stack minus tokenization and modules)"] = stack_total - tokenization - model_total
        phases["document level (embed_documents minus the stack)"] = embed_total - stack_total
    else:
        wordpiece = phases.get("WordPiece tokenization", 0.0)
        words = phases.get("word tokenization (regex)", 0.0)
        phases["window planning, subtoken pooling, batching (stack minus forward and WordPiece)"] = stack_total - forward - wordpiece
        phases["document pooling (embed_documents minus stack and word tokenization)"] = embed_total - stack_total - words
    phases["actor: Arrow in/out (actor call minus embed_documents)"] = actor_total - embed_total
    n_docs = int(sum(1 for row_kind in table.column("kind").to_pylist() if row_kind == "doc"))
    steps = sum(phases.values())
    key = "pipeline_runs" if kind == ST_KIND else "transformer_runs"
    run = best_run(report.data["doc"][key])
    pipeline_seconds = n_docs / run["steady_docs_per_s"] if run["steady_docs_per_s"] else None
    rows = {name: {"seconds": round(seconds, 3), "share_of_steps": round(seconds / steps, 4),
                   "ms_per_doc": round(1000 * seconds / n_docs, 3)} for name, seconds in sorted(phases.items(), key=lambda kv: -kv[1])}
    return {
        "stack": STACKS[kind].label, "docs": n_docs, "in_process_steps_seconds": steps, "threads": threads, "phases": rows,
        "pipeline_steady_seconds_for_same_docs": pipeline_seconds,
        "pipeline_minus_steps_seconds": pipeline_seconds - steps if pipeline_seconds is not None else None,
        "pipeline_cpu_seconds_by_role": run["cpu_seconds_by_role"],
        "note": "phases: the run's steps in-process, in sequence, same shards, same actor class and threads; "
                "pipeline_minus_steps: what Ray adds in steady state (scheduling, object store, idle waits), "
                "negative when Ray's overlap of read/write with embedding more than pays for itself",
    }


# --------------------------------------------------------------------------- table

TITLES = {
    "doc": "1. Document vectors, the default stack (sentence_transformer: MiniLM-L6 exactly as SentenceTransformer.encode, "
           "both truncate at 256 pieces) — ratio vs SentenceTransformer.encode",
    "doc_tr": "1b. Document vectors, the transformer stack (layers -1, subtoken mean, mean pooling; every piece, 512-piece "
              "windows) — ratio vs SentenceTransformer.encode",
    "overhead": "1c. Pipeline steady state vs the same stack in-process (TextEmbedder, no I/O, no Ray) — ratio vs in-process",
    "job": "2. Many short documents ({docs} docs <= 256 pieces, {shards} local shards), end to end — ratio vs "
           "SentenceTransformer.encode",
    "token": "3. Token vectors (TransformerWordEmbeddings, layers -1,-2,-3,-4, first) — ratio vs flair (sorted)",
    "charlm": "4. Flair char-LM (hidden 2048, 1 layer) — ratio vs flair (sorted)",
    "scaling": "5. Scaling (default stack) — ratio vs 1 actor",
    "bytes": "   Output size",
}


def cpu_roles_line(cpu: dict[str, float]) -> str:
    total = sum(cpu.values()) or 1.0
    return ", ".join(f"{name} {seconds:.1f} ({100 * seconds / total:.0f}%)" for name, seconds in cpu.items())


def table_text(report: Report) -> str:
    job = report.data.get("job", {})
    titles = {**TITLES, "job": TITLES["job"].format(docs=f"{job.get('docs', 0):,}", shards=job.get("shards", 0))}
    lines = []
    labels = [row.name for row in report.rows] + list(report.data.get("equality", {})) + list(report.data.get("precision", {}))
    width = max((len(label) for label in labels), default=20) + 2
    for section in ("doc", "doc_tr", "overhead", "job", "token", "charlm", "scaling", "bytes"):
        rows = [row for row in report.rows if row.section == section]
        if not rows:
            continue
        lines.append("")
        lines.append(titles[section])
        for row in rows:
            rate = f"{row.rate:9.1f} {row.unit:<11}" if row.rate is not None else f"{'—':>9} {row.unit:<11}"
            ratio_text = f"{row.ratio:6.2f}x" if row.ratio is not None else "     — "
            lines.append(f"  {row.name:<{width}}{rate} {ratio_text}  {row.note}")
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
    for profile in report.data.get("profile", {}).values():
        phase_width = max([len(name) for name in profile["phases"]] + [len("pipeline steady state, same docs")]) + 2
        lines.append("")
        lines.append(f"Where the time goes: {profile['stack']} ({profile['docs']} docs; the run's steps in-process, "
                     f"{profile['threads']} threads)")
        for name, row in profile["phases"].items():
            lines.append(f"  {name:<{phase_width}}{row['seconds']:8.2f} s {100 * row['share_of_steps']:5.1f}%")
        lines.append(f"  {'sum of steps':<{phase_width}}{profile['in_process_steps_seconds']:8.2f} s")
        steady = profile["pipeline_steady_seconds_for_same_docs"]
        lines.append(f"  {'pipeline steady state, same docs':<{phase_width}}{fmt(steady, '8.2f', '       —')} s")
    roles = cpu_role_runs(report)
    if roles:
        lines.append("")
        lines.append("CPU seconds by process role during a run (the local Ray's processes, sampled)")
        for name, cpu in roles.items():
            lines.append(f"  {name}: {cpu_roles_line(cpu)}")
    return "\n".join(lines).lstrip("\n")


def cpu_role_runs(report: Report) -> dict[str, dict[str, float]]:
    """The runs whose CPU seconds by role the table shows: each stack's best run and the job's."""
    doc = report.data.get("doc", {})
    found: dict[str, dict[str, float]] = {}
    for label, key in (("default stack, best run", "pipeline_runs"), ("default stack, bfloat16", "bfloat16_runs"),
                       ("transformer stack, best run", "transformer_runs")):
        if doc.get(key):
            found[label] = best_run(doc[key])["cpu_seconds_by_role"]
    job = report.data.get("job")
    if job:
        found[f"many short documents ({job['docs']:,} docs)"] = best_run(job["runs"])["cpu_seconds_by_role"]
    scaling = report.data.get("scaling")
    if scaling:
        found["2 actors"] = scaling["two_actors"]["cpu_seconds_by_role"]
    return found


# --------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a few minutes on 2 cores")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help="comma list of " + ", ".join(SECTIONS) + " (scaling and profile need doc)")
    parser.add_argument("--out", default=str(BENCH / "results"), help="folder for <date>.json")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    settings = MODES[mode]
    sections = set(args.sections.split(","))
    unknown = sections - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    if {"scaling", "profile"} & sections:
        sections.add("doc")

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    sys.path.insert(0, str(ROOT))
    from actors.stack.registry import quiet_loading
    from bench.corpus import make_documents, sentences_of

    quiet_loading()

    started = time.perf_counter()
    report = Report(mode)
    report.data["machine"] = machine_info()
    report.data["load_average_start"] = load_average()
    docs = make_documents(settings["docs"], seed=args.seed)
    report.data["corpus"] = {"docs": len(docs), "seed": args.seed, "source": "examples/corpus (The Devil's Dictionary)",
                             "kinds": {k: sum(d["kind"] == k for d in docs) for k in ("short", "medium", "long")},
                             "characters": sum(len(d["text"]) for d in docs)}
    report.data["settings"] = settings
    report.data["sections"] = sorted(sections)
    workdir = Path(tempfile.mkdtemp(prefix="corpus-embed-bench-"))
    try:
        if "doc" in sections:
            doc_section(report, settings, docs, workdir)
        if "job" in sections:
            job_section(report, settings, workdir, args.seed)
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
            start_ray()
            scaling_section(report, settings, workdir)
        if "profile" in sections:
            start_ray()
            profile_section(report, settings, workdir)
    finally:
        report.data.pop("_doc_objects", None)
        stop_ray()
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
