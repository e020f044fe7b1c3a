"""The files of a sentence-transformers model folder that decide its vectors. Torch-free.

The driver fingerprints a stack without importing torch, and the embedding checks the folder
before anything is loaded; both read the folder's layout from here.

A sentence-transformers folder lists its modules in ``modules.json``: each entry names a class and
a folder (``""`` is the root; the Transformer usually lives there, with ``config.json``, the
weights and the tokenizer files). ``config_sentence_transformers.json`` holds the prompts, the
default prompt name and an optional ``truncate_dim``. A module folder that ``modules.json`` names
but that does not exist is not an error: sentence-transformers builds that module from its
defaults (the packaged all-MiniLM-L6-v2 names a ``2_Normalize`` folder it does not ship, and
``Normalize`` has no settings). A folder without ``modules.json`` is a plain Hugging Face model
(sentence-transformers adds mean pooling, or last-token pooling for a causal LM).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

MODULES_FILE = "modules.json"
CONFIG_FILE = "config_sentence_transformers.json"

# Weight formats that are never read here: pickles (torch.load) and other frameworks' exports.
_PICKLED_WEIGHTS = ("pytorch_model.bin",)
_IGNORED_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".h5", ".msgpack", ".ot", ".onnx", ".onnx_data")
# Files that describe a model without changing what it computes.
_IGNORED_NAMES = frozenset({"README.md", "data_config.json", "train_script.py", "LICENSE", "LICENSE.txt"})


def read_modules(path: str) -> list[dict] | None:
    """The entries of ``modules.json`` (each with ``type`` and ``path``), or None when there is none."""
    modules_file = Path(path, MODULES_FILE)
    if not modules_file.is_file():
        return None
    entries = json.loads(modules_file.read_text(encoding="utf-8"))
    for entry in entries:
        _check_relative(entry.get("path", ""), path)
    return entries


def declared_prompts(path: str) -> dict[str, str]:
    """The prompts the model's own ``config_sentence_transformers.json`` declares (may be empty)."""
    config_file = Path(path, CONFIG_FILE)
    if not config_file.is_file():
        return {}
    prompts = json.loads(config_file.read_text(encoding="utf-8")).get("prompts") or {}
    return {str(name): str(text) for name, text in prompts.items()}


def sentence_transformer_files(path: str) -> list[str]:
    """Every file under the model folder ``path`` that affects the vectors, sorted.

    ``modules.json`` and ``config_sentence_transformers.json``; the files of the root folder when a
    module lives there, or when there is no ``modules.json`` (``config.json``, the safetensors
    weights, the tokenizer files, ``sentence_bert_config.json``, ...); and every file under each
    module's own folder (``1_Pooling/config.json``, a ``2_Dense`` folder's config and weights).
    Left out: folders no module names (``onnx/``, ``openvino/``), hidden files, model cards,
    training metadata, and weights in formats never loaded here (pickles, TensorFlow, Flax,
    ONNX). A missing module folder contributes nothing. A path that is not a folder (a hub
    name left to the library's own cache) gives an empty list.
    """
    root = Path(path)
    if not root.is_dir():
        return []
    modules = read_modules(path)
    found: set[Path] = set()
    for name in (MODULES_FILE, CONFIG_FILE):
        if (root / name).is_file():
            found.add(root / name)
    folders = [entry.get("path", "") for entry in modules] if modules is not None else [""]
    for folder in folders:
        if folder in ("", "."):
            found.update(p for p in root.iterdir() if p.is_file() and _counts(p.name))
        else:
            module_root = root / folder
            if module_root.is_dir():
                found.update(
                    p for p in module_root.rglob("*")
                    if p.is_file() and _counts(p.name) and not _hidden(p.relative_to(module_root))
                )
    return sorted(str(p) for p in found)


def pickled_weight_files(path: str) -> list[str]:
    """Module folders whose only weights are a pickle (``pytorch_model.bin``), as paths to those pickles.

    sentence-transformers would ``torch.load`` them (for ``Dense`` and similar modules); this
    project reads safetensors only, so such a folder is refused before loading. The Transformer's
    own weights are guarded by passing ``use_safetensors=True`` to transformers.
    """
    root = Path(path)
    modules = read_modules(path) if root.is_dir() else None
    if not modules:
        return []
    found = []
    for entry in modules:
        folder = entry.get("path", "")
        if folder in ("", "."):
            continue
        module_root = root / folder
        if not module_root.is_dir():
            continue
        for directory in [module_root, *(p for p in module_root.rglob("*") if p.is_dir())]:
            if (directory / "model.safetensors").is_file():
                continue
            found.extend(str(directory / name) for name in _PICKLED_WEIGHTS if (directory / name).is_file())
    return sorted(found)


def _counts(name: str) -> bool:
    return not name.startswith(".") and name not in _IGNORED_NAMES and not name.endswith(_IGNORED_SUFFIXES)


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def _check_relative(folder: str, path: str) -> None:
    """A module folder must stay inside the model folder (as sentence-transformers requires)."""
    if os.path.isabs(folder) or ".." in Path(folder).parts:
        raise ValueError(f"{os.path.join(path, MODULES_FILE)} names a module folder outside the model: {folder!r}")
