"""The GPU table: what our stack, our pipeline and SentenceTransformer get out of one accelerator.

    bash bench/gpu.sh [--budget SECONDS] [--out DIR]        # the prepared script (hard time limit)
    python -m bench.gpu [--budget SECONDS] [--deadline SECONDS] [--out DIR] [--shape base|tiny]

One run prints, side by side:

- the ceiling: a bf16 matmul rate (TFLOP/s) on the device;
- a BERT-base-sized encoder (``transformers.BertConfig()``, random weights, saved with a WordPiece
  tokenizer from the packaged MiniLM's files; nothing downloaded) at 128 and 512 pieces per text:
  tokens/s and achieved FLOP/s as a share of the matmul rate for (a) our stack in-process
  (``TransformerWordEmbeddings``, and the ``sentence_transformer`` kind on the same folder),
  (b) ``corpus-embed run`` with one GPU actor (``resources.gpus_per_actor: 1``) on a generated
  local corpus, and (c) ``SentenceTransformer.encode`` on the same folder, with its default batch
  of 32 and with a batch as large as our token budget;
- the packaged MiniLM on short documents: docs/s for the same three;
- a Flair character LM (hidden 2048, random weights): chars/s.

Texts for the encoder rows are exactly 128 or 512 pieces long (whole-piece vocabulary words), so
no row pads and the FLOP count is exact (``bench.models.encoder_flops``). Each row runs for a fixed
time budget after a warm-up call; a pipeline row's corpus is sized from the in-process rate to
last about as long, and its rate is the steady state (documents committed after the first quarter
of them, over the time since; start-up given apart). Our precision is the default (``auto``: bf16
autocast on CUDA, float32 on CPU); the SentenceTransformer peer runs under the same autocast.

Without CUDA it prints "no CUDA: ..." and makes a smoke pass of every row (a small encoder shape,
about a second per row): the figures are then no measurement, the point is that the script runs.
Results: ``bench/results/gpu-<date>-<device>.json`` (rewritten after every row), and the table.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import platform
import re
import shutil
import signal
import string
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
LENGTHS = (128, 512)
SHARDS = {True: 16, False: 8}    # a pipeline row's shards, with CUDA and without (smoke)
# A pipeline row's steady state starts once this share of its documents is committed (bench.runs).
STEADY_SKIP = 0.25
ST_BATCH = 32                      # SentenceTransformer.encode's default batch
CHARLM = {"base": {"hidden_size": 2048, "embedding_size": 100, "nlayers": 1},
          "tiny": {"hidden_size": 256, "embedding_size": 100, "nlayers": 1}}


@dataclass
class Row:
    key: str                       # stable id, e.g. "bert512.pipeline"
    section: str
    name: str
    unit: str
    rate: float | None = None      # in ``unit``
    tokens_per_s: float | None = None
    flops_per_s: float | None = None
    share_of_matmul: float | None = None
    note: str = ""
    status: str = "pending"        # ok | skipped: ... | error: ...
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def row_plan() -> list[tuple[str, str, str, str]]:
    """(key, section, name, unit) of every row, in table order."""
    plan = [("matmul", "ceiling", "matmul bf16 (the ceiling)", "TFLOP/s")]
    for length in LENGTHS:
        section = f"encoder L={length}"
        plan += [
            (f"bert{length}.twe", section, "ours TransformerWordEmbeddings, in-process", "tokens/s"),
            (f"bert{length}.st_kind", section, "ours sentence_transformer kind, in-process", "tokens/s"),
            (f"bert{length}.pipeline", section, "corpus-embed run, 1 GPU actor (steady state)", "tokens/s"),
            (f"bert{length}.st32", section, f"SentenceTransformer.encode, batch {ST_BATCH}", "tokens/s"),
            (f"bert{length}.st_budget", section, "SentenceTransformer.encode, batch = our token budget", "tokens/s"),
        ]
    plan += [
        ("minilm.st_kind", "MiniLM", "ours sentence_transformer kind, in-process", "docs/s"),
        ("minilm.pipeline", "MiniLM", "corpus-embed run, 1 GPU actor (steady state)", "docs/s"),
        ("minilm.st32", "MiniLM", f"SentenceTransformer.encode, batch {ST_BATCH}", "docs/s"),
        ("charlm.ours", "char-LM", "ours FlairEmbeddings", "chars/s"),
    ]
    return plan


ROW_NAMES = [name for _, _, name, _ in row_plan()]


class OutOfTime(BaseException):
    """SIGTERM arrived (bench/gpu.sh's hard limit). A BaseException, as KeyboardInterrupt is, so that
    no ``except Exception`` on the way (a row's, the pipeline's) takes it for a failure and goes on."""


def stop_on_sigterm() -> None:
    """Turn SIGTERM into ``OutOfTime``. Again after ``ray.init``, whose signal handlers replace ours."""
    def stop(signum: int, _frame: Any) -> None:
        raise OutOfTime(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)


def log(message: str) -> None:
    print(f"[gpu {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- timing

def timed_budget(fn: Callable[[list[Any]], Any], items: Sequence[Any], chunk: int, budget: float) -> tuple[int, float]:
    """Call ``fn`` on consecutive chunks of ``items`` (cycling) until ``budget`` seconds have passed.

    One untimed warm-up call first. Returns (items processed, seconds). ``fn`` must return only
    once its work is done (our embeddings and ``encode`` return host memory, which synchronises).
    """
    fn(list(items[: max(1, min(chunk, len(items)) // 4)]))
    done, position = 0, 0
    started = time.perf_counter()
    while True:
        batch = [items[(position + i) % len(items)] for i in range(chunk)]
        fn(batch)
        done += len(batch)
        position = (position + chunk) % len(items)
        elapsed = time.perf_counter() - started
        if elapsed >= budget:
            return done, elapsed


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- the bench

class GpuBench:
    def __init__(self, args: argparse.Namespace):
        import torch

        self.args = args
        self.cuda = torch.cuda.is_available()
        self.device = torch.device("cuda" if self.cuda else "cpu")
        self.shape = args.shape if args.shape != "auto" else ("base" if self.cuda else "tiny")
        self.budget = args.budget if args.budget is not None else (15.0 if self.cuda else 1.0)
        self.started = time.monotonic()
        self.deadline = self.started + args.deadline
        # Padded tokens per forward pass, ours and the pipeline's alike (the sentence_transformer
        # kind's own default on each device; set on the pipeline too so it runs the same batches).
        self.token_budget = 32768 if self.cuda else 8192
        self.workdir = Path(tempfile.mkdtemp(prefix="corpus-embed-gpu-"))
        self.rows = {key: Row(key, section, name, unit) for key, section, name, unit in row_plan()}
        self.matmul_flops: float | None = None
        self.ray_start: float | None = None
        self.info = self.device_info()
        date = _dt.date.today().isoformat()
        slug = re.sub(r"[^a-z0-9]+", "-", self.info["device"].lower()).strip("-") or "device"
        self.target = Path(args.out) / f"gpu-{date}-{slug}{'' if self.cuda else '-smoke'}.json"

    # -- bookkeeping
    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def device_info(self) -> dict[str, Any]:
        import torch
        import transformers

        info: dict[str, Any] = {"torch": torch.__version__, "transformers": transformers.__version__,
                                "python": platform.python_version(), "cpu_count": os.cpu_count(), "cuda": self.cuda}
        with contextlib.suppress(ImportError):
            import sentence_transformers

            info["sentence-transformers"] = sentence_transformers.__version__
        if self.cuda:
            props = torch.cuda.get_device_properties(self.device)
            info.update(device=props.name, memory_gib=round(props.total_memory / 2**30, 1), cuda_version=torch.version.cuda,
                        capability=f"{props.major}.{props.minor}", device_count=torch.cuda.device_count(),
                        bf16_supported=torch.cuda.is_bf16_supported())
        else:
            info["device"] = "cpu"
        return info

    def run_row(self, key: str, need: float, fn: Callable[[Row], None]) -> None:
        row = self.rows[key]
        if self.remaining() < need:
            row.status = f"skipped: out of time ({self.remaining():.0f} s left, ~{need:.0f} s needed)"
            log(f"{row.section}: {row.name}: {row.status}")
            return
        log(f"{row.section}: {row.name}")
        started = time.monotonic()
        try:
            fn(row)
            row.status = "ok"
        except OutOfTime:
            row.status = "skipped: stopped at the time limit"
            raise
        except Exception as error:  # noqa: BLE001 - one row's failure is reported, the others still run
            row.status = f"error: {type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}"
            row.extra["traceback"] = traceback.format_exc()[-4000:]
            log(f"  {row.status}")
        finally:
            row.seconds = time.monotonic() - started
            self.save()

    def setup(self, prefix: str, fn: Callable[[], Any]) -> Any:
        """Run a section's set-up; if it fails, every row of the section says why and None is returned."""
        try:
            return fn()
        except OutOfTime:
            raise
        except Exception as error:  # noqa: BLE001 - the other sections still run
            status = f"error in set-up: {type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}"
            log(f"{prefix}: {status}")
            for key, row in self.rows.items():
                if key.startswith(prefix) and row.status == "pending":
                    row.status = status
                    row.extra["traceback"] = traceback.format_exc()[-4000:]
            self.save()
            return None

    def share(self, row: Row, flops_per_s: float | None) -> None:
        row.flops_per_s = flops_per_s
        if flops_per_s is not None and self.matmul_flops:
            row.share_of_matmul = flops_per_s / self.matmul_flops

    # -- rows
    def matmul(self, row: Row) -> None:
        import torch

        n = 8192 if self.cuda else 1024
        a = torch.randn(n, n, device=self.device, dtype=torch.bfloat16)
        b = torch.randn(n, n, device=self.device, dtype=torch.bfloat16)
        inner = 20 if self.cuda else 1
        for _ in range(3):
            a @ b
        sync(self.device)
        count = 0
        started = time.perf_counter()
        while True:
            for _ in range(inner):
                a @ b
            sync(self.device)
            count += inner
            elapsed = time.perf_counter() - started
            if elapsed >= self.budget:
                break
        self.matmul_flops = 2.0 * n ** 3 * count / elapsed
        row.rate = self.matmul_flops / 1e12
        row.flops_per_s = self.matmul_flops
        row.share_of_matmul = 1.0
        row.note = f"{n}x{n} @ {n}x{n} in bf16, {count} products in {elapsed:.1f} s"
        row.extra = {"n": n, "products": count, "seconds": elapsed}

    def encoder_rows(self) -> None:
        from transformers import AutoTokenizer

        from bench.models import make_encoder_folder

        folder = self.workdir / f"bert-{self.shape}"
        log(f"making a random {self.shape} BERT in {folder}")
        made = self.setup("bert", lambda: (make_encoder_folder(folder, self.shape), AutoTokenizer.from_pretrained(str(folder))))
        if made is None:
            return
        config, tokenizer = made
        self.encoder_config = config
        for length in LENGTHS:
            self.encoder_length(str(folder), config, tokenizer, length)

    def encoder_length(self, folder: str, config: dict[str, Any], tokenizer: Any, length: int) -> None:
        from bench.models import encoder_flops, exact_length_texts

        chunk = (4 if self.cuda else 1) * self.token_budget // length
        texts = self.setup(f"bert{length}.", lambda: exact_length_texts(tokenizer, length, max(2 * chunk, 64), seed=length))
        if texts is None:
            return
        words = [text.split() for text in texts]
        per_text = encoder_flops(config, length)
        shape = "BERT-base" if self.shape == "base" else f"{self.shape} BERT shape"
        rates: dict[str, float] = {}

        def fill(row: Row, texts_done: int, seconds: float, note: str) -> None:
            row.tokens_per_s = texts_done * length / seconds
            row.rate = row.tokens_per_s
            rates[row.key] = texts_done / seconds
            self.share(row, texts_done * per_text / seconds)
            row.note = note
            row.extra.update(texts=texts_done, seconds=seconds, length=length)

        def twe(row: Row) -> None:
            from actors.stack import TransformerWordEmbeddings

            ours = TransformerWordEmbeddings(folder, layers="-1", subtoken_pooling="mean",
                                             max_batch_tokens=self.token_budget)
            done, seconds = timed_budget(ours.embed, words, chunk, self.budget)
            fill(row, done, seconds, f"{shape}, layers -1, subtoken mean; max_batch_tokens {self.token_budget}; "
                                     f"precision auto ({self.precision_label()})")
            del ours

        def st_kind(row: Row) -> None:
            from actors.stack.sentence_transformer import SentenceTransformerEmbeddings

            ours = SentenceTransformerEmbeddings(folder, max_batch_tokens=self.token_budget)
            done, seconds = timed_budget(ours.embed_with_counts, texts, chunk, self.budget)
            fill(row, done, seconds, f"the stack kind on the same folder (mean pooling); max_batch_tokens "
                                     f"{self.token_budget}; precision auto ({self.precision_label()})")
            del ours

        def st_peer(batch_size: int) -> Callable[[Row], None]:
            def measure(row: Row) -> None:
                st = self.sentence_transformer(folder)
                done, seconds = timed_budget(lambda batch: self.st_encode(st, batch, batch_size), texts, chunk, self.budget)
                fill(row, done, seconds, f"batch {batch_size}{self.autocast_note()}")
            return measure

        def pipeline(row: Row) -> None:
            rate = rates.get(f"bert{length}.st_kind") or rates.get(f"bert{length}.twe") or 1.0
            result = self.pipeline_run(f"bert{length}", [{"sentence_transformer": {"model": folder}}], texts, rate,
                                       batch_rows=chunk)
            fill(row, *self.pipeline_figures(result), self.pipeline_note(result, length))
            row.extra["run"] = result

        budget_batch = self.token_budget // length
        # ~: load + warm-up + budget; a pipeline run adds the actor's start and the model's load.
        self.run_row(f"bert{length}.twe", self.budget + 20, twe)
        self.run_row(f"bert{length}.st_kind", self.budget + 20, st_kind)
        self.run_row(f"bert{length}.pipeline", self.budget + 45, pipeline)
        self.run_row(f"bert{length}.st32", self.budget + 15, st_peer(ST_BATCH))
        self.run_row(f"bert{length}.st_budget", self.budget + 10, st_peer(budget_batch))

    def minilm_rows(self) -> None:
        from bench.models import encoder_flops, minilm_path

        chunk = 4 * 1024 if self.cuda else 64

        def prepare() -> tuple[str, dict[str, Any], list[str], list[int]]:
            from transformers import AutoTokenizer

            from bench.corpus import make_short_documents

            path = minilm_path()
            config = json.loads((Path(path) / "config.json").read_text())
            texts = [doc["text"] for doc in make_short_documents(max(4 * chunk, 256), seed=3)]
            tokenizer = AutoTokenizer.from_pretrained(path)
            pieces = [min(256, len(ids)) for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]]
            return path, config, texts, pieces

        prepared = self.setup("minilm", prepare)
        if prepared is None:
            return
        path, config, texts, pieces = prepared
        mean_pieces = sum(pieces) / len(pieces)
        mean_flops = sum(encoder_flops(config, n) for n in pieces) / len(pieces)
        rates: dict[str, float] = {}

        def fill(row: Row, done: int, seconds: float, note: str) -> None:
            row.rate = done / seconds
            rates[row.key] = row.rate
            row.tokens_per_s = row.rate * mean_pieces
            self.share(row, row.rate * mean_flops)
            row.note = note
            row.extra.update(docs=done, seconds=seconds, mean_pieces=mean_pieces)

        def st_kind(row: Row) -> None:
            from actors.stack.sentence_transformer import SentenceTransformerEmbeddings

            ours = SentenceTransformerEmbeddings("default", max_batch_tokens=self.token_budget)
            done, seconds = timed_budget(ours.embed_with_counts, texts, chunk, self.budget)
            fill(row, done, seconds, f"short documents (mean {mean_pieces:.0f} pieces, none over 256); "
                                     f"max_batch_tokens {self.token_budget}; precision auto ({self.precision_label()})")

        def pipeline(row: Row) -> None:
            rate = rates.get("minilm.st_kind") or 1.0
            result = self.pipeline_run("minilm", None, texts, rate, batch_rows=1024 if self.cuda else 16)
            fill(row, *self.pipeline_figures(result), self.pipeline_note(result, None))
            row.extra["run"] = result

        def st_peer(row: Row) -> None:
            st = self.sentence_transformer(path)
            done, seconds = timed_budget(lambda batch: self.st_encode(st, batch, ST_BATCH), texts, chunk, self.budget)
            fill(row, done, seconds, f"batch {ST_BATCH}, truncates at 256{self.autocast_note()}")

        self.run_row("minilm.st_kind", self.budget + 15, st_kind)
        self.run_row("minilm.pipeline", self.budget + 40, pipeline)
        self.run_row("minilm.st32", self.budget + 10, st_peer)

    def charlm_row(self, row: Row) -> None:
        from actors.stack import FlairEmbeddings
        from bench.corpus import make_documents, sentences_of
        from bench.models import char_lm_flops_per_char, make_char_lm

        shape = CHARLM[self.shape]
        sentences = sentences_of(make_documents(200, seed=5), 2000 if self.cuda else 64, seed=5)
        characters = sorted(set("".join(" ".join(s) for s in sentences)) | set(string.printable))
        path = self.workdir / f"charlm-h{shape['hidden_size']}.pt"
        make_char_lm(path, characters, **shape)
        ours = FlairEmbeddings(str(path))
        chunk = 512 if self.cuda else 8
        done, seconds = timed_budget(ours.embed, sentences, chunk, self.budget)
        chars_per_sentence = sum(len(" ".join(s)) + 2 for s in sentences) / len(sentences)
        row.rate = done * chars_per_sentence / seconds
        self.share(row, row.rate * char_lm_flops_per_char(shape["hidden_size"], shape["embedding_size"], shape["nlayers"]))
        row.note = (f"hidden {shape['hidden_size']}, {shape['nlayers']} layer, random weights; {done / seconds:,.0f} "
                    f"sentences/s; max_batch_chars {ours.max_batch_chars}; precision auto ({self.precision_label()})")
        row.extra.update(sentences=done, seconds=seconds, **shape)

    # -- helpers
    def precision_label(self) -> str:
        from actors.stack.device import autocast_dtype

        dtype = autocast_dtype(self.device, "auto")
        return "float32" if dtype is None else f"{str(dtype).removeprefix('torch.')} autocast"

    def autocast_note(self) -> str:
        from actors.stack.device import autocast_dtype

        dtype = autocast_dtype(self.device, "auto")
        return "" if dtype is None else f", under torch.autocast({str(dtype).removeprefix('torch.')}) as ours"

    def sentence_transformer(self, path: str) -> Any:
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(path, device=str(self.device))

    def st_encode(self, st: Any, texts: list[str], batch_size: int) -> Any:
        import torch

        from actors.stack.device import autocast_dtype

        dtype = autocast_dtype(self.device, "auto")
        context = torch.autocast(self.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
        with context:
            vectors = st.encode(texts, batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False)
        return vectors.float().cpu()

    def pipeline_run(self, name: str, stack: list[dict[str, Any]] | None, texts: list[str], rate: float,
                     batch_rows: int) -> dict[str, Any]:
        """A ``corpus-embed run`` with one GPU actor on ``SHARDS`` shards sized to last about the budget at
        the in-process ``rate``; its steady state starts once a quarter of the documents are committed."""
        from bench.corpus import write_shards
        from bench.runs import pipeline_run, start_ray

        if self.ray_start is None:
            self.ray_start = start_ray()
            stop_on_sigterm()
        shards = SHARDS[self.cuda]
        # The budget's worth at the in-process rate, but no more than a run 4x slower than in-process
        # could embed before the deadline (start-up aside).
        seconds = min(self.budget, max(1.0, (self.remaining() - 60) / 4))
        docs_needed = max(shards * batch_rows, int(rate * seconds))
        docs = [{"id": f"{name}:{i:08d}", "text": texts[i % len(texts)]} for i in range(docs_needed)]
        input_path = self.workdir / f"corpus-{name}"
        write_shards(docs, input_path, shards)
        resources = {"actors": 1, "gpus_per_actor": 1 if self.cuda else 0, "cpus_per_actor": 1,
                     "batch_rows": batch_rows, "max_batch_tokens": self.token_budget}
        result = pipeline_run(name, input_path, self.workdir / f"out-{name}", resources, stack=stack, sample_cpu=False,
                              skip_share=STEADY_SKIP)
        shutil.rmtree(input_path, ignore_errors=True)
        shutil.rmtree(self.workdir / f"out-{name}", ignore_errors=True)
        return result

    @staticmethod
    def pipeline_figures(result: dict[str, Any]) -> tuple[int, float]:
        """(docs, seconds) of the run's steady state; of the whole run when it committed in one burst."""
        if result["steady_docs_per_s"] is None:
            return result["docs"], result["seconds_total"]
        return result["steady_docs"], result["steady_seconds"]

    def pipeline_note(self, result: dict[str, Any], length: int | None) -> str:
        steady = "" if result["steady_docs_per_s"] is not None else (
            "NO STEADY STATE (all units committed in one burst): the figures are the whole run's, start-up included; ")
        overall = result["tokens"] / result["seconds_total"] if length else result["overall_docs_per_s"]
        unit = "tokens/s" if length else "docs/s"
        return (f"{steady}{result['docs']:,} docs, {SHARDS[self.cuda]} shards, batch_rows {result['resources']['batch_rows']}, "
                f"gpus_per_actor {result['resources']['gpus_per_actor']}; first rows {result['seconds_to_first_rows'] or 0:.1f} s, "
                f"first commit {result['seconds_to_first_commit'] or 0:.1f} s; {overall:,.0f} {unit} overall incl. start-up"
                f" (Ray init {self.ray_start or 0:.1f} s before)")

    # -- output
    def header(self) -> str:
        info = self.info
        if self.cuda:
            device = (f"{info['device']} ({info['memory_gib']} GiB, capability {info['capability']}), CUDA "
                      f"{info['cuda_version']}")
        else:
            device = f"CPU ({info['cpu_count']} cores)"
        return (f"corpus-embed GPU bench {_dt.datetime.now().isoformat(timespec='seconds')} — {device}, torch "
                f"{info['torch']}; encoder shape {self.shape}; budget {self.budget:g} s per row; "
                f"{time.monotonic() - self.started:.0f} s")

    def table(self) -> str:
        titles = {
            "ceiling": "Ceiling",
            "encoder L=128": "Encoder ({shape}, random weights), 128 pieces per text",
            "encoder L=512": "Encoder ({shape}, random weights), 512 pieces per text",
            "MiniLM": "MiniLM-L6 (packaged), short documents",
            "char-LM": "Flair char-LM ({hidden}, random weights)",
        }
        shape = "BERT-base: BertConfig()" if self.shape == "base" else f"{self.shape} BERT shape, smoke only"
        hidden = f"hidden {CHARLM[self.shape]['hidden_size']}"
        width = max(len(name) for name in ROW_NAMES) + 2
        lines = [f"  {'':<{width}}{'rate':>22}  {'tokens/s':>12}  {'TFLOP/s':>8}  {'of matmul':>9}  note"]
        section = None
        for row in self.rows.values():
            if row.section != section:
                section = row.section
                lines.append(titles[section].format(shape=shape, hidden=hidden))
            if row.status != "ok":
                lines.append(f"  {row.name:<{width}}{'—':>22}  {'—':>12}  {'—':>8}  {'—':>9}  {row.status}")
                continue
            rate = f"{row.rate:,.1f} {row.unit}" if row.rate is not None else "—"
            tokens = f"{row.tokens_per_s:,.0f}" if row.tokens_per_s is not None else "—"
            tflops = f"{row.flops_per_s / 1e12:.2f}" if row.flops_per_s is not None else "—"
            share = f"{100 * row.share_of_matmul:.1f}%" if row.share_of_matmul is not None else "—"
            lines.append(f"  {row.name:<{width}}{rate:>22}  {tokens:>12}  {tflops:>8}  {share:>9}  {row.note}")
        return "\n".join(lines)

    def save(self) -> None:
        payload = {"date": _dt.datetime.now().isoformat(timespec="seconds"), "command": "bash bench/gpu.sh",
                   "argv": sys.argv[1:], "device": self.info, "shape": self.shape, "budget_s": self.budget,
                   "encoder_config": getattr(self, "encoder_config", None), "matmul_flops_per_s": self.matmul_flops,
                   "ray_start_seconds": self.ray_start, "seconds": time.monotonic() - self.started,
                   "smoke": not self.cuda, "rows": [asdict(row) for row in self.rows.values()]}
        self.target.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.target.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(payload, indent=1, default=str))
        os.replace(temporary, self.target)

    def run(self) -> None:
        self.run_row("matmul", self.budget + 5, self.matmul)
        self.encoder_rows()
        self.minilm_rows()
        self.run_row("charlm.ours", self.budget + 10, self.charlm_row)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds of timed work per row (default 15 on CUDA, 1 without: a smoke pass)")
    parser.add_argument("--deadline", type=float, default=420.0,
                        help="seconds after which rows not started are skipped (bench/gpu.sh also kills at its limit)")
    parser.add_argument("--out", default=str(RESULTS), help="folder for gpu-<date>-<device>.json")
    parser.add_argument("--shape", choices=("auto", "base", "tiny"), default="auto",
                        help="encoder and char-LM shape: base (BERT-base, hidden-2048 LM) or tiny; auto: base on CUDA")
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    sys.path.insert(0, str(ROOT))

    stop_on_sigterm()
    from actors.stack.registry import quiet_loading

    quiet_loading()
    bench = GpuBench(args)
    if not bench.cuda:
        import torch

        print(f"no CUDA: torch {torch.__version__} sees no CUDA device; smoke pass of every row on the CPU "
              f"({bench.shape} shapes, {bench.budget:g} s per row): the figures below are no measurement", flush=True)
    stopped = False
    try:
        bench.run()
    except (OutOfTime, KeyboardInterrupt):
        stopped = True
        for row in bench.rows.values():
            if row.status == "pending":
                row.status = "skipped: stopped at the time limit"
    finally:
        with contextlib.suppress(Exception):
            from bench.runs import stop_ray

            stop_ray()
        shutil.rmtree(bench.workdir, ignore_errors=True)
        bench.save()
        print(bench.header())
        print(bench.table())
        shown = bench.target.relative_to(ROOT) if bench.target.is_relative_to(ROOT) else bench.target
        print(f"results: {shown}", flush=True)
    if stopped:
        return 124
    return 0 if all(row.status == "ok" for row in bench.rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
