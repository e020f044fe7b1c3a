"""The flair side of the bench: runs in bench/.peers-venv (flair 0.15.1, transformers < 5), never imports the project.

    bench/.peers-venv/bin/python bench/peer_flair.py JOB.json

``JOB.json`` names one task; the script times itself and prints one JSON object on its last line.

- ``make_lm``: a character LM of realistic size with random weights (flair's own ``LanguageModel``,
  saved with ``LanguageModel.save``), so that both sides load the same file.
- ``transformer``: flair's ``TransformerWordEmbeddings`` on pre-tokenized sentences.
- ``charlm``: flair's ``FlairEmbeddings`` on pre-tokenized sentences.

Both embedding tasks call ``embed`` on mini-batches of ``batch_size`` sentences, in each order
that ``orders`` names: ``sorted`` (longest first, as flair's own ``predict`` does: the kinder
order for flair, since a batch is padded to its longest sentence) and ``corpus`` (as given: what
a plain ``embed()`` loop over a corpus does). The time covers ``embed`` and reading the vectors out of
the ``Sentence`` objects (what a user loop must do); model loading is timed apart. The first
``sample`` sentences' vectors are saved (``.npz``, key ``s{i}``) for the equality check.
"""
from __future__ import annotations

import json
import sys
import time


def _sentences(path: str) -> list[list[str]]:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _embed_all(embedding, token_lists: list[list[str]], batch_size: int, order_name: str = "sorted") -> list:
    import torch
    from flair.data import Sentence

    order = list(range(len(token_lists)))
    if order_name == "sorted":
        order.sort(key=lambda i: -len(token_lists[i]))
    out: list = [None] * len(token_lists)
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            sentences = [Sentence(token_lists[i]) for i in chunk]
            embedding.embed(sentences)
            for i, sentence in zip(chunk, sentences):
                out[i] = torch.stack([token.get_embedding() for token in sentence.tokens]).cpu()
                sentence.clear_embeddings()
    return out


def _timed_runs(embedding, token_lists, job: dict) -> tuple[dict[str, list[float]], list]:
    """Seconds per repetition for each order in ``job["orders"]`` (interleaved), and float32 vectors.

    An order ``"<order>+bfloat16"`` runs that order under ``torch.autocast("cpu", bfloat16)``: the
    same reduced-precision lever the project offers, applied to flair from the outside.
    """
    import contextlib

    import torch

    _embed_all(embedding, token_lists[:8], job["batch_size"])
    times: dict[str, list[float]] = {order: [] for order in job["orders"]}
    vectors = None
    for _ in range(job["reps"]):
        for order in job["orders"]:
            base, _, precision = order.partition("+")
            context = torch.autocast("cpu", dtype=getattr(torch, precision)) if precision else contextlib.nullcontext()
            with context:
                if precision:
                    _embed_all(embedding, token_lists[:8], job["batch_size"])  # warm the autocast path
                started = time.perf_counter()
                got = _embed_all(embedding, token_lists, job["batch_size"], base)
                times[order].append(time.perf_counter() - started)
            if not precision:
                vectors = got
    return times, vectors


def _save_sample(path: str | None, vectors: list, sample: int) -> None:
    if not path:
        return
    import numpy as np

    np.savez(path, **{f"s{i}": vectors[i].numpy() for i in range(min(sample, len(vectors)))})


def make_lm(job: dict) -> dict:
    import torch
    from flair.data import Dictionary
    from flair.models import LanguageModel

    torch.manual_seed(job.get("seed", 0))
    dictionary = Dictionary(add_unk=True)
    for char in job["characters"]:
        dictionary.add_item(char)
    started = time.perf_counter()
    lm = LanguageModel(dictionary, is_forward_lm=job.get("is_forward_lm", True), hidden_size=job["hidden_size"],
                       nlayers=job["nlayers"], embedding_size=job.get("embedding_size", 100), nout=None)
    lm.save(job["path"])
    return {"path": job["path"], "seconds": time.perf_counter() - started, "dictionary_size": len(dictionary)}


def _embedding_task(job: dict, make_embedding) -> dict:
    """Load the embedding ``make_embedding()`` builds (timed apart), time it on the job's sentences, save a sample."""
    import torch

    torch.set_num_threads(job["threads"])
    token_lists = _sentences(job["sentences"])
    started = time.perf_counter()
    embedding = make_embedding()
    embedding.eval()
    load = time.perf_counter() - started
    times, vectors = _timed_runs(embedding, token_lists, job)
    _save_sample(job.get("vectors_out"), vectors, job.get("sample", 0))
    return {"load_seconds": load, "seconds": times, "sentences": len(token_lists),
            "tokens": sum(len(t) for t in token_lists), "embedding_length": embedding.embedding_length}


def transformer(job: dict) -> dict:
    from flair.embeddings import TransformerWordEmbeddings

    return _embedding_task(job, lambda: TransformerWordEmbeddings(
        job["model"], layers=job["layers"], subtoken_pooling=job["subtoken_pooling"],
        layer_mean=job.get("layer_mean", True), fine_tune=False, allow_long_sentences=True))


def charlm(job: dict) -> dict:
    from flair.embeddings import FlairEmbeddings

    return _embedding_task(job, lambda: FlairEmbeddings(
        job["model"], chars_per_chunk=job.get("chars_per_chunk", 512), with_whitespace=job.get("with_whitespace", True)))


def versions() -> dict:
    import flair
    import torch
    import transformers

    return {"flair": flair.__version__, "torch": torch.__version__, "transformers": transformers.__version__}


TASKS = {"make_lm": make_lm, "transformer": transformer, "charlm": charlm, "versions": lambda job: versions()}


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as handle:
        job = json.load(handle)
    result = TASKS[job["task"]](job)
    if job["task"] != "versions":
        result["versions"] = versions()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
