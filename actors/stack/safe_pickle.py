"""Load Flair's character-LM ``.pt`` files without flair and without running pickle code.

Flair saves a language model as ``torch.save(dict)``: a pickle holding a ``state_dict`` of tensors,
a few ints and strings, and a ``flair.data.Dictionary`` (the character vocabulary). A plain
``torch.load(weights_only=False)`` would import flair and would execute whatever callable a
tampered file names, so models fetched from the internet or a shared bucket could run code on
every worker. ``weights_only=True`` alone refuses the file, because of the Dictionary.

``load_flair_lm`` therefore unpickles with ``RestrictedUnpickler``: every global the pickle names
must be on a short allow-list (exactly what the format needs), ``flair.data.Dictionary`` is mapped
to the small ``FlairDictionary`` stand-in that only receives its plain-data state, and anything
else stops the load with ``UnsafePickleError`` naming the global and the file. Nothing named by
the file is imported or called unless it is on the list.
"""
from __future__ import annotations

import os
import pickle
from collections import OrderedDict
from typing import Any, BinaryIO

import torch

FLAIR_DICTIONARY = ("flair.data", "Dictionary")

# Globals a Flair LM file needs, and nothing more. ``_codecs.encode`` is how pickle protocol 2
# (older files) writes ``bytes``; ``_rebuild_tensor`` and ``_rebuild_parameter`` are how older
# torch versions wrote tensors. All are pure data constructors.
_ALLOWED_CALLABLES: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("_codecs", "encode"): __import__("_codecs").encode,
}


class UnsafePickleError(pickle.UnpicklingError):
    """A model file names a global outside the allow-list; nothing it names was run."""


class FlairDictionary:
    """Stand-in for ``flair.data.Dictionary``: receives its pickled state and maps characters to ids.

    Only plain data is accepted (``item2idx: dict[bytes, int]``, ``idx2item: list[bytes]`` and
    flags), so a tampered state cannot smuggle objects in through this class either.
    """

    def __init__(self) -> None:
        self.item2idx: dict[bytes, int] = {}
        self.idx2item: list[bytes] = []
        self.add_unk = True
        self.multi_label = False
        self.span_labels = False
        self._char_to_id: dict[str, int] = {}

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise UnsafePickleError(f"flair.data.Dictionary state must be a dict, got {type(state).__name__}")
        item2idx = state.get("item2idx", {})
        idx2item = state.get("idx2item", [])
        if not isinstance(item2idx, dict) or not all(
            isinstance(k, bytes) and isinstance(v, int) for k, v in item2idx.items()
        ):
            raise UnsafePickleError("flair.data.Dictionary.item2idx must map bytes to int")
        if not isinstance(idx2item, list) or not all(isinstance(item, bytes) for item in idx2item):
            raise UnsafePickleError("flair.data.Dictionary.idx2item must be a list of bytes")
        self.__init__()
        self.item2idx = dict(item2idx)
        self.idx2item = list(idx2item)
        self.add_unk = bool(state.get("add_unk", True))
        self.multi_label = bool(state.get("multi_label", False))
        self.span_labels = bool(state.get("span_labels", False))
        self._char_to_id = {key.decode("utf-8", errors="replace"): value for key, value in self.item2idx.items()}

    def __len__(self) -> int:
        return len(self.idx2item)

    def char_ids(self, text: str) -> list[int]:
        """Id of every code point of ``text``; unknown characters get 0 (``<unk>``), as in Flair."""
        lookup = self._char_to_id
        return [lookup.get(char, 0) for char in text]

    def id_of(self, item: str, default: int = 0) -> int:
        return self._char_to_id.get(item, default)


def _allowed_global(module: str, name: str) -> Any | None:
    """The object an allowed ``module.name`` stands for, or None when it is not allowed."""
    if (module, name) == FLAIR_DICTIONARY:
        return FlairDictionary
    if (module, name) in _ALLOWED_CALLABLES:
        return _ALLOWED_CALLABLES[(module, name)]
    if module == "torch" and name.endswith("Storage"):
        storage = getattr(torch, name, None)
        if isinstance(storage, type) and issubclass(storage, torch.storage.TypedStorage):
            return storage
    return None


class _Forbidden(pickle.UnpicklingError):
    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.qualified = f"{module}.{name}"


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` admits only the allow-list above.

    Every way a pickle can reach a callable (GLOBAL, STACK_GLOBAL, the copyreg extension codes)
    goes through ``find_class``, so refusing there means nothing outside the list is imported.
    """

    def find_class(self, module: str, name: str) -> Any:
        found = _allowed_global(module, name)
        if found is None:
            raise _Forbidden(module, name)
        return found


class _RestrictedPickleModule:
    """The ``pickle_module`` torch.load drives: same interface as ``pickle``, restricted."""

    __name__ = "actors.stack.safe_pickle"
    Unpickler = RestrictedUnpickler

    @staticmethod
    def load(file: BinaryIO, **kwargs: Any) -> Any:
        return RestrictedUnpickler(file, **kwargs).load()


def _torch_forces_weights_only() -> bool:
    return os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "0").lower() in ("1", "y", "yes", "true")


def restricted_torch_load(path: str | os.PathLike[str]) -> Any:
    """``torch.load`` of ``path`` on the CPU through the restricted unpickler.

    torch's own ``weights_only`` unpickler is no alternative: besides refusing the Dictionary it
    rejects pickle protocol 4 framing, which is what Flair writes. Raises ``UnsafePickleError``
    naming the forbidden global and the file.
    """
    path = os.fspath(path)
    if _torch_forces_weights_only():
        raise RuntimeError(
            f"cannot load {path}: TORCH_FORCE_WEIGHTS_ONLY_LOAD is set, which makes torch refuse every "
            "custom unpickler, including the restricted one Flair files need (torch's weights-only "
            "unpickler cannot read them). Unset it for this process; the restricted unpickler still "
            "refuses any global outside its allow-list."
        )
    try:
        return torch.load(path, map_location="cpu", pickle_module=_RestrictedPickleModule, weights_only=False)
    except _Forbidden as error:
        raise UnsafePickleError(
            f"refusing to load {path}: its pickle names the global {error.qualified}, which is not "
            f"allowed in a Flair language-model file (allowed: {', '.join(allowed_globals())}). "
            "Nothing it names was imported or run."
        ) from None
    except UnsafePickleError as error:
        raise UnsafePickleError(f"refusing to load {path}: {error}") from None


def allowed_globals() -> list[str]:
    """The allow-list, as ``module.name`` strings (for error messages and docs)."""
    names = [f"{m}.{n}" for m, n in _ALLOWED_CALLABLES] + ["torch.<Type>Storage", ".".join(FLAIR_DICTIONARY)]
    return sorted(names)


_REQUIRED_KEYS = ("state_dict", "dictionary", "is_forward_lm", "hidden_size", "nlayers", "embedding_size")


def load_flair_lm(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a Flair ``LanguageModel.save`` file into plain data, checking its shape.

    Returns the saved dict with defaults filled in as Flair's ``load_language_model`` does
    (``document_delimiter`` "\\n", ``recurrent_type`` "lstm", ``nout`` None); ``state_dict`` maps
    names to CPU tensors and ``dictionary`` is a ``FlairDictionary``.
    """
    path = os.fspath(path)
    state = restricted_torch_load(path)
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a Flair language model: it holds a {type(state).__name__}, not a dict")
    missing = [key for key in _REQUIRED_KEYS if key not in state]
    if missing:
        raise ValueError(f"{path} is not a Flair language model: keys {missing} are missing")
    if not isinstance(state["dictionary"], FlairDictionary):
        raise ValueError(f"{path}: 'dictionary' is not a flair.data.Dictionary")
    weights = state["state_dict"]
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise ValueError(f"{path}: 'state_dict' must map names to tensors")
    for key in ("hidden_size", "nlayers", "embedding_size"):
        if not isinstance(state[key], int) or isinstance(state[key], bool) or state[key] <= 0:
            raise ValueError(f"{path}: {key!r} must be a positive int, got {state[key]!r}")
    nout = state.get("nout")
    if nout is not None and (not isinstance(nout, int) or nout <= 0):
        raise ValueError(f"{path}: 'nout' must be None or a positive int, got {nout!r}")
    return {
        **state,
        "state_dict": dict(weights),
        "is_forward_lm": bool(state["is_forward_lm"]),
        "nout": nout,
        "document_delimiter": state.get("document_delimiter", "\n"),
        "recurrent_type": str(state.get("recurrent_type") or "lstm").lower(),
        "has_decoder": bool(state.get("has_decoder", True)),
    }
