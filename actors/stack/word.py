"""Classic static word vectors (GloVe, word2vec, fastText ``.vec``, gensim KeyedVectors) as a lookup table.

Every token gets one pre-computed vector, found in Flair's order: the exact token, its lowercase, the
lowercase with every digit replaced by ``#``, then by ``0`` (GloVe and word2vec vocabularies normalise
numbers one of those two ways), else a zero vector. Output is a pure table look-up, so it is
batch-invariant by construction.

The whole matrix lives in one frozen ``nn.Embedding`` (float32, last row all zeros for unknown words)
plus a plain ``dict`` word -> row: a million 300-d vectors cost 1.2 GB once, never a second copy while
reading. Duplicate words keep their first vector, as gensim does.

File formats (``.gz`` is read transparently). ``format="auto"`` decides by the first bytes and the
name: pickle bytes are ``gensim``; ``.bin`` is ``word2vec-binary`` (Flair's rule); no ``count dim``
header is ``glove``; after a header, raw (non-printable) bytes are ``word2vec-binary``, printable text
is ``word2vec`` (``fasttext`` for ``.vec``); ``.txt`` and ``.vec`` files are always text.

- ``word2vec``: text, a ``count dim`` header line, then ``word v1 ... vdim`` per line;
- ``fasttext``: fastText's ``.vec``, the same text format (reported as ``fasttext`` for ``.vec`` files);
- ``glove``: the same lines without a header; ``dim`` comes from the first line;
- ``word2vec-binary``: the header line, then per word ``word<space>`` and ``dim`` little-endian float32
  (gensim's ``binary=True``; newlines between records, as the original C tool writes, are skipped);
- ``gensim``: a ``KeyedVectors.save()`` file (gensim 3 or 4; Flair's published ids are such files), with
  large arrays in companion ``<file>.vectors.npy`` files. It is a pickle, so it is read by a restricted
  unpickler that admits only plain containers, numpy arrays and inert stand-ins for gensim's classes:
  gensim need not be installed and no code named by the file runs. A saved model whose ``wv`` holds
  the vectors is read too, unless it pickles anything else (a random generator's state, say).

A header's count must match the number of vectors, so a truncated download fails loudly; every
malformed line or record is reported with the file and the line (record, for binary files).

Words are decoded as UTF-8 with invalid bytes replaced, because published binaries (the original
word2vec C tool cuts words inside multi-byte characters) would otherwise be unreadable. Text lines are
split on single spaces only; a word that itself holds spaces (GloVe 840B has a few) is accepted when
the fields before the last ``dim`` numbers are not all numbers, so a line with too many numbers is
still reported as malformed.
"""
from __future__ import annotations

import functools
import gzip
import os
import pickle
import re
from dataclasses import dataclass, field
from typing import IO, Any, Callable

import numpy as np
import torch
from torch import nn

from actors.stack.base import Sentences, TokenEmbeddings
from actors.stack.batching import budget_batches
from actors.stack.device import pick_device
from actors.stack.registry import WORD_MODELS, ModelNotFoundError, resolve_file
from actors.stack.specs.word import FORMATS, WordSpec, published_url

DEFAULT_MAX_BATCH_TOKENS = 65536
_DIGIT = re.compile(r"\d")
_GZIP_MAGIC = b"\x1f\x8b"
_HEAD_BYTES = 1 << 16
_BINARY_CHUNK = 1 << 20


class WordEmbeddings(TokenEmbeddings):
    """Static word vectors from a file or one of Flair's published ids (``glove``, ``en``, ``de``, ...).

    ``embeddings`` is a local path, a URL, or an id from ``registry.WORD_MODELS``, resolved like every
    model file (path, cache, ``CORPUS_EMBED_MODEL_MIRROR``, published URL). ``format`` is one of
    ``FORMATS``. The table is frozen (``requires_grad`` False) unless ``fine_tune`` is true, and lives
    on ``device``; ``embed``'s vectors come back as float32 on the CPU. ``max_batch_tokens`` bounds how
    many look-ups go to the device at once. Fine-tuning trains the rows of known words; the unknown
    row (its index is the embedding's ``padding_idx``) gets no gradient and stays zero.
    """

    spec_class = WordSpec

    def __init__(
        self,
        embeddings: str | os.PathLike[str],
        *,
        device: str | torch.device | None = None,
        max_batch_tokens: int | None = None,
        precision: str = "auto",
        fine_tune: bool = False,
        **settings: Any,
    ) -> None:
        super().__init__()
        self.spec = spec = WordSpec(embeddings=os.fspath(embeddings), **settings)
        self.embeddings = spec.embeddings
        # A look-up table: precision changes nothing; the token budget bounds one look-up's size.
        self.max_batch_tokens = DEFAULT_MAX_BATCH_TOKENS if max_batch_tokens is None else max_batch_tokens
        path = resolve_file("word", spec.embeddings, WORD_MODELS).path
        table = load_word_vectors(path, spec.format, _companion_finder(published_url(spec.embeddings)))
        self.format = table.format
        self._files = [path, *table.companions]
        self.vocab: dict[str, int] = table.index
        self.embedding_length = table.matrix.shape[1]
        self._unknown_row = table.matrix.shape[0] - 1
        self.fine_tune = bool(fine_tune)
        self.embedding = nn.Embedding.from_pretrained(
            table.matrix, freeze=not self.fine_tune, padding_idx=self._unknown_row
        )
        self.eval()
        self.to(pick_device(device))

    def _pretrained_modules(self) -> list[nn.Module]:
        return [self.embedding]

    def row(self, word: str) -> int:
        """Row of ``word`` in the table, in Flair's look-up order; the all-zero last row if unknown."""
        vocab = self.vocab
        found = vocab.get(word)
        if found is not None:
            return found
        lower = word.lower()
        found = vocab.get(lower)
        if found is not None:
            return found
        found = vocab.get(_DIGIT.sub("#", lower))
        if found is not None:
            return found
        return vocab.get(_DIGIT.sub("0", lower), self._unknown_row)

    def _vectors(self, sentences: Sentences, out: torch.device) -> list[torch.Tensor]:
        """One ``[len(sentence), embedding_length]`` float32 tensor per sentence on ``out``, in input order."""
        results: list[torch.Tensor] = [torch.empty(0)] * len(sentences)
        lengths = [len(sentence) for sentence in sentences]
        device = self.embedding.weight.device
        for batch in budget_batches(lengths, self.max_batch_tokens):
            rows = [self.row(token) for i in batch for token in sentences[i]]
            ids = torch.tensor(rows, dtype=torch.long).to(device)
            vectors = self.embedding(ids).float().to(out)
            for i, part in zip(batch, vectors.split([lengths[i] for i in batch])):
                results[i] = part
        return results

    def model_files(self) -> list[str]:
        """The files read: the table and the companion arrays its pickle named (``spec.files()``
        finds the same ones without loading)."""
        return list(self._files)

    def extra_repr(self) -> str:
        return f"{self.embeddings!r}, format={self.format!r}, words={len(self.vocab)}, dim={self.embedding_length}"


@dataclass
class WordVectors:
    """A loaded table: ``matrix`` is ``[rows + 1, dim]`` float32 whose last row is the zero vector."""

    index: dict[str, int]
    matrix: torch.Tensor
    format: str
    companions: list[str] = field(default_factory=list)


# (path of a side file beside the main file, its name's suffix after the main file's name) -> local path
CompanionFinder = Callable[[str, str], str]


def _companion_finder(source_url: str | None) -> CompanionFinder:
    """Where a gensim file's side arrays are: beside it, else (for a URL or published id) resolved too.

    Flair's published files keep their matrix in ``<file>.vectors.npy``; resolving it by the same
    rules as the main file means a mirror or the cache only has to hold both under ``word/``.
    """

    def find(local: str, suffix: str) -> str:
        if os.path.exists(local):
            return local
        if source_url is not None:
            return resolve_file("word", source_url + suffix).path
        raise ModelNotFoundError(f"{local} not found: the gensim file beside it keeps its vectors there")

    return find


def load_word_vectors(path: str, format: str = "auto", companions: CompanionFinder | None = None) -> WordVectors:
    """Read a vectors file of ``format`` (or the detected one) into a ``WordVectors`` table."""
    with _open(path) as stream:
        head = stream.read(_HEAD_BYTES)
    detected = detect_format(path, head) if format == "auto" else format
    _check_format(path, head, detected)
    if detected == "gensim":
        return _read_gensim(path, companions or _companion_finder(None))
    with _open(path) as stream:
        if detected == "word2vec-binary":
            rows = _read_word2vec_binary(stream, path)
        else:
            rows = _read_text(stream, path, header=detected != "glove")
    return WordVectors(rows.index, rows.matrix(), detected)


def detect_format(path: str, head: bytes) -> str:
    """The format of a file from its name and first bytes (``head``, decompressed)."""
    if _is_pickle(head):
        return "gensim"
    extension = _extension(path)
    if extension == ".bin":
        return "word2vec-binary"
    first, _, rest = head.partition(b"\n")
    header = _parse_header(first.decode("utf-8", "replace"))
    if header is None:
        return "glove"
    if extension not in (".txt", ".vec") and _is_binary_record(rest, header[1]):
        return "word2vec-binary"
    return "fasttext" if extension == ".vec" else "word2vec"


def _check_format(path: str, head: bytes, format: str) -> None:
    """Refuse an explicit format the content contradicts, with the reason, before reading it all."""
    first = head.partition(b"\n")[0].decode("utf-8", "replace").rstrip()
    if format == "gensim":
        if not _is_pickle(head):
            raise ValueError(f"{path}: not a gensim KeyedVectors file (it is not a pickle)")
    elif _is_pickle(head):
        raise ValueError(f"{path}: a gensim KeyedVectors file (pickle), not {format}; use format='gensim'")
    elif format == "glove" and _parse_header(first) is not None:
        raise ValueError(f"{path}, line 1: {first!r} is a 'count dim' header; use format='word2vec'")
    elif format != "glove" and _parse_header(first) is None:
        raise ValueError(f"{path}, line 1: expected a 'count dim' header for {format}, found {first[:80]!r}")


def _open(path: str) -> IO[bytes]:
    """The file's bytes, gunzipped when it is gzip-compressed (detected by content, not by name)."""
    with open(path, "rb") as probe:
        compressed = probe.read(2) == _GZIP_MAGIC
    return gzip.open(path, "rb") if compressed else open(path, "rb")  # noqa: SIM115


def _extension(path: str) -> str:
    name = path[:-3] if path.endswith(".gz") else path
    return os.path.splitext(name)[1].lower()


def _is_pickle(head: bytes) -> bool:
    return len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5


def _parse_header(line: str) -> tuple[int, int] | None:
    """``(count, dim)`` when ``line`` is a word2vec header, else None."""
    parts = line.split()
    if len(parts) == 2 and all(part.isascii() and part.isdigit() for part in parts):
        return int(parts[0]), int(parts[1])
    return None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_binary_record(data: bytes, dim: int) -> bool:
    """Whether the bytes after a header are a binary record: text records are printable UTF-8."""
    chunk = data[: 4 * dim + 256]
    try:
        text = chunk.decode("utf-8")
    except UnicodeDecodeError as error:
        return error.start < len(chunk) - 3  # a character cut by the chunk's end proves nothing
    return any(ord(char) < 32 and char not in "\t\n\r" for char in text)


class _Rows:
    """A float32 matrix grown block by block plus a first-wins word index.

    Blocks avoid both a Python list of per-word arrays and an ``np.stack`` copy; the final tensor is
    filled block by block, freeing each as it goes, so reading peaks near one copy of the matrix.
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.index: dict[str, int] = {}
        self._blocks: list[np.ndarray] = []
        self._filled = 0

    def add(self, word: str, vector: np.ndarray) -> None:
        if word in self.index:
            return
        if not self._blocks or self._filled == len(self._blocks[-1]):
            size = min(1024 << len(self._blocks), 65536)
            self._blocks.append(np.empty((size, self.dim), dtype=np.float32))
            self._filled = 0
        self._blocks[-1][self._filled] = vector
        self._filled += 1
        self.index[word] = len(self.index)

    def matrix(self) -> torch.Tensor:
        count = len(self.index)
        out = torch.zeros(count + 1, self.dim, dtype=torch.float32)
        view = out.numpy()
        start = 0
        while self._blocks:
            block = self._blocks.pop(0)
            take = min(len(block), count - start)
            view[start : start + take] = block[:take]
            start += take
        return out


def _read_text(stream: IO[bytes], path: str, header: bool) -> _Rows:
    """word2vec / fastText text (``header``) or GloVe (no header); errors name the file and line."""
    rows: _Rows | None = None
    expected: int | None = None
    dim = 0
    seen = 0
    for line_no, raw in enumerate(stream, start=1):
        line = raw.decode("utf-8", "replace").rstrip()
        if not line:
            continue
        if header and expected is None:
            parsed = _parse_header(line)
            if parsed is None:
                raise ValueError(f"{path}, line {line_no}: expected a 'count dim' header, found {line[:80]!r}")
            expected, dim = parsed
            rows = _Rows(dim)
            continue
        if rows is None:
            dim = len(line.split(" ")) - 1
            if dim < 1:
                raise ValueError(f"{path}, line {line_no}: expected a word and its numbers, found {line[:80]!r}")
            rows = _Rows(dim)
        word, vector = _parse_text_line(line, dim, path, line_no)
        rows.add(word, vector)
        seen += 1
    if rows is None:
        raise ValueError(f"{path}: no vectors found (empty file)")
    if expected is not None and seen != expected:
        raise ValueError(f"{path}: the header (line 1) promises {expected} vectors, the file has {seen}")
    return rows


def _parse_text_line(line: str, dim: int, path: str, line_no: int) -> tuple[str, np.ndarray]:
    parts = line.split(" ")
    found = len(parts) - 1
    if found < dim or (found > dim and all(_is_number(part) for part in parts[1:-dim])):
        raise ValueError(f"{path}, line {line_no}: expected a word and {dim} numbers, found {found} values")
    values = parts[-dim:]
    try:
        vector = np.array(values, dtype=np.float32)
    except ValueError:
        bad = next(value for value in values if not _is_number(value))
        raise ValueError(f"{path}, line {line_no}: {bad!r} is not a number") from None
    return " ".join(parts[:-dim]), vector


def _read_word2vec_binary(stream: IO[bytes], path: str) -> _Rows:
    """word2vec binary: header line, then ``word<space>`` + ``dim`` float32 LE per record."""
    first = stream.readline().decode("utf-8", "replace").rstrip()
    parsed = _parse_header(first)
    if parsed is None:
        raise ValueError(f"{path}, line 1: expected a 'count dim' header, found {first[:80]!r}")
    count, dim = parsed
    rows = _Rows(dim)
    width = 4 * dim
    buffer = b""
    pos = 0
    for record in range(1, count + 1):
        while True:
            space = buffer.find(b" ", pos)
            if space != -1 and len(buffer) - space - 1 >= width:
                break
            more = stream.read(_BINARY_CHUNK)
            if not more:
                raise ValueError(
                    f"{path}: record {record}: the file ends early; the header (line 1) promises "
                    f"{count} vectors of {dim} float32"
                )
            buffer = buffer[pos:] + more
            pos = 0
        word = buffer[pos:space].lstrip(b"\n").decode("utf-8", "replace")
        rows.add(word, np.frombuffer(buffer, dtype="<f4", count=dim, offset=space + 1))
        pos = space + 1 + width
    if (buffer[pos:] + stream.read(4096)).strip():
        raise ValueError(f"{path}: data after the {count} records the header (line 1) promises")
    return rows


# --- gensim KeyedVectors: a pickle, read without running any code it names ---------------------------

class _GensimObject:
    """Inert stand-in for any gensim class in the file: it only keeps the attributes pickled with it."""

    _origin = "gensim"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """numpy's own pickle helpers under both module names (``numpy.core`` before 2.0, ``numpy._core``)."""
    reconstruct = np.zeros(1).__reduce__()[0]
    scalar = np.float32(0).__reduce__()[0]
    frombuffer = np.zeros(1, dtype=np.float32).__reduce_ex__(5)[0]
    admitted: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for core in ("numpy.core", "numpy._core"):
        admitted[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        admitted[(f"{core}.multiarray", "scalar")] = scalar
        admitted[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return admitted


_BUILTINS = (
    "dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "bool",
    "str", "bytes", "bytearray", "object",
)


@functools.lru_cache(maxsize=1)
def _admitted_globals() -> dict[tuple[str, str], Any]:
    import _codecs
    import builtins
    import collections
    import copyreg

    admitted = _numpy_globals()
    admitted.update({("builtins", name): getattr(builtins, name) for name in _BUILTINS})
    admitted[("copyreg", "_reconstructor")] = copyreg._reconstructor
    admitted[("_codecs", "encode")] = _codecs.encode
    admitted[("collections", "OrderedDict")] = collections.OrderedDict
    admitted[("collections", "defaultdict")] = collections.defaultdict
    return admitted


class _KeyedVectorsUnpickler(pickle.Unpickler):
    """Admits containers, numpy arrays and gensim stand-ins; refuses every other global by name."""

    def __init__(self, stream: IO[bytes]) -> None:
        super().__init__(stream)
        self.stand_ins: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str) -> Any:
        admitted = _admitted_globals()
        if (module, name) in admitted:
            return admitted[(module, name)]
        if (module == "gensim" or module.startswith("gensim.")) and name.isidentifier():
            key = (module, name)
            if key not in self.stand_ins:
                self.stand_ins[key] = type(name, (_GensimObject,), {"_origin": f"{module}.{name}"})
            return self.stand_ins[key]
        raise pickle.UnpicklingError(
            f"refusing {module}.{name}: a gensim KeyedVectors file needs only containers and numpy arrays"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refusing persistent ids: not part of the gensim format")


def _read_gensim(path: str, companions: CompanionFinder) -> WordVectors:
    """A gensim 3/4 ``KeyedVectors.save()`` file (or a model whose ``wv`` is one) and its side arrays."""
    with _open(path) as stream:
        try:
            saved = _KeyedVectorsUnpickler(stream).load()
        except Exception as error:  # any failure here means the file is not what it claims to be
            raise ValueError(f"{path}: not a readable gensim KeyedVectors file: {error}") from None
    if not isinstance(saved, _GensimObject):
        raise ValueError(f"{path}: the pickle holds a {type(saved).__name__}, not a gensim KeyedVectors object")
    prefix, keyed = path, saved
    state = vars(keyed)
    if not _has_vectors(state) and isinstance(state.get("wv"), _GensimObject):
        prefix, keyed = f"{path}.wv", state["wv"]
        state = vars(keyed)
    compressed = path.endswith(".gz")
    used: list[str] = []
    vectors = _gensim_array(state, path, prefix, compressed, companions, used)
    keys = _gensim_keys(state, path)
    if vectors.ndim != 2:
        raise ValueError(f"{path}: the vectors have shape {vectors.shape}, expected [words, dim]")
    if keys and not 0 <= min(keys.values()) <= max(keys.values()) < vectors.shape[0]:
        raise ValueError(f"{path}: the vocabulary points outside the {vectors.shape[0]} rows of the vectors")
    matrix = torch.zeros(vectors.shape[0] + 1, vectors.shape[1], dtype=torch.float32)
    matrix.numpy()[:-1] = vectors
    return WordVectors(keys, matrix, "gensim", used)


def _has_vectors(state: dict[str, Any]) -> bool:
    return any(name in state for name in ("vectors", "syn0"))


def _gensim_array(
    state: dict[str, Any], path: str, prefix: str, compressed: bool, companions: CompanionFinder, used: list[str]
) -> np.ndarray:
    """The word matrix: pickled inline, or (``__numpys``) in ``<prefix>.<attr>.npy`` (``.npz`` when gzipped)."""
    attribute = "vectors" if "vectors" in state else "syn0"
    value = state.get(attribute)
    if attribute in (state.get("__numpys") or ()):
        suffix = f".{attribute}.npz" if compressed else f".{attribute}.npy"
        local = companions(prefix + suffix, prefix[len(path) :] + suffix)
        used.append(local)
        if compressed:
            with np.load(local, allow_pickle=False) as archive:
                value = archive["val"]
        else:
            value = np.load(local, mmap_mode="r", allow_pickle=False)
    if not isinstance(value, np.ndarray):
        raise ValueError(f"{path}: no word vectors found (attribute {attribute!r} is {type(value).__name__})")
    return value


def _gensim_keys(state: dict[str, Any], path: str) -> dict[str, int]:
    """word -> row: gensim 4's ``key_to_index``, gensim 3's ``vocab`` (``Vocab.index``), or the key list."""
    try:
        if isinstance(state.get("key_to_index"), dict) and state["key_to_index"]:
            return {str(key): int(row) for key, row in state["key_to_index"].items()}
        vocab = state.get("vocab")
        if isinstance(vocab, dict) and vocab:
            return {str(key): int(vars(entry)["index"]) for key, entry in vocab.items()}
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{path}: the vocabulary entries carry no usable row index") from None
    for name in ("index_to_key", "index2word", "index2entity"):
        keys = state.get(name)
        if isinstance(keys, list) and keys:
            index: dict[str, int] = {}
            for row, key in enumerate(keys):
                index.setdefault(str(key), row)
            return index
    raise ValueError(f"{path}: no vocabulary found (key_to_index, vocab or index_to_key)")
