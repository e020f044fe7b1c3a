"""WordEmbeddings: every file format, Flair's look-up order, malformed files, gensim files, resolution.

The vector files are written here, byte by byte in each format's layout, from one table of known
float32 vectors; every expected output is a row of that table (or zeros), compared exactly.
"""
from __future__ import annotations

import gzip
import pickle
import re
import socket
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from actors.stack.registry import WORD_MODELS, ModelNotFoundError
from actors.stack.word import WordEmbeddings, detect_format

DIM = 4
_RNG = np.random.default_rng(7)
# Every look-up rule has its own entries; "Paris"/"paris" and "#"/"0" test precedence; "dup" is
# listed twice and the first vector must win.
WORDS = [
    "Paris", "paris", "berlin", "##.##", "route-00", "#", "0", "Zürich", "école", "dup", ". . .",
]
TABLE = {word: _RNG.standard_normal(DIM).astype(np.float32) for word in WORDS}
DUP_SECOND = np.full(DIM, 9.0, dtype=np.float32)
ENTRIES = [(word, TABLE[word]) for word in WORDS if word != ". . ."] + [("dup", DUP_SECOND)]
ZERO = np.zeros(DIM, dtype=np.float32)

# token -> the table entry Flair's look-up order must reach (None: unknown, zero vector)
EXPECTED = {
    "Paris": "Paris",        # exact wins over lowercase
    "paris": "paris",
    "PARIS": "paris",        # lowercase
    "Berlin": "berlin",      # lowercase
    "12.50": "##.##",        # digits -> '#'
    "Route-66": "route-00",  # digits -> '0' (no 'route-##')
    "7": "#",                # '#' is tried before '0'
    "٣": "#",                # a non-ASCII digit counts as a digit, as in Flair's regex
    "Zürich": "Zürich",
    "ÉCOLE": "école",
    "dup": "dup",            # first occurrence wins
    "zzz": None,             # unknown -> zeros
    "": None,
}


def flair_lookup(table: dict[str, np.ndarray], token: str) -> np.ndarray:
    """Flair's documented order, written out independently of the code under test."""
    lower = token.lower()
    for key in (token, lower, re.sub(r"\d", "#", lower), re.sub(r"\d", "0", lower)):
        if key in table:
            return table[key]
    return ZERO


def _vector(entry: str | None) -> np.ndarray:
    return ZERO if entry is None else TABLE[entry]


def _number(value: np.float32) -> str:
    return repr(float(value))  # round-trips exactly to the same float32


def _text_lines(entries: list[tuple[str, np.ndarray]]) -> list[str]:
    return [word + " " + " ".join(_number(v) for v in vector) for word, vector in entries]


def write_text(path: Path, entries: list[tuple[str, np.ndarray]], header: bool) -> Path:
    lines = _text_lines(entries)
    if header:
        lines = [f"{len(entries)} {DIM}"] + lines
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_binary(path: Path, entries: list[tuple[str, np.ndarray]], newline: bool = False) -> Path:
    """gensim's binary=True layout; ``newline`` adds the '\\n' after each vector as the C tool does."""
    data = bytearray(f"{len(entries)} {DIM}\n".encode())
    for word, vector in entries:
        data += word.encode("utf-8") + b" " + struct.pack(f"<{DIM}f", *vector)
        if newline:
            data += b"\n"
    path.write_bytes(bytes(data))
    return path


def assert_lookups(emb: WordEmbeddings) -> None:
    tokens = list(EXPECTED)
    [vectors] = emb.embed([tokens])
    assert vectors.dtype == torch.float32 and vectors.device.type == "cpu"
    assert vectors.shape == (len(tokens), DIM)
    for i, token in enumerate(tokens):
        expected = torch.from_numpy(_vector(EXPECTED[token]))
        assert torch.equal(vectors[i], expected), f"token {token!r}"


def test_flair_lookup_order(tmp_path: Path) -> None:
    emb = WordEmbeddings(str(write_text(tmp_path / "vectors.txt", ENTRIES, header=True)), device="cpu")
    assert emb.embedding_length == DIM
    assert emb.get_config_dict() == {"embeddings": str(tmp_path / "vectors.txt"), "format": "auto"}
    assert emb.format == "word2vec"
    assert emb.model_files() == emb.spec.files() == [str(tmp_path / "vectors.txt")]
    assert_lookups(emb)


@pytest.mark.parametrize(
    ("name", "writer", "format"),
    [
        ("w2v.txt", lambda p: write_text(p, ENTRIES, header=True), "word2vec"),
        ("glove.6B.4d.txt", lambda p: write_text(p, ENTRIES, header=False), "glove"),
        ("cc.xx.4.vec", lambda p: write_text(p, ENTRIES, header=True), "fasttext"),
        ("vectors.bin", lambda p: write_binary(p, ENTRIES), "word2vec-binary"),
        ("c-tool.w2v", lambda p: write_binary(p, ENTRIES, newline=True), "word2vec-binary"),
        ("noext", lambda p: write_binary(p, ENTRIES), "word2vec-binary"),
    ],
)
def test_every_format_detected_and_read(tmp_path: Path, name: str, writer, format: str) -> None:
    path = writer(tmp_path / name)
    emb = WordEmbeddings(str(path), device="cpu")
    assert emb.format == format and emb.get_config_dict()["format"] == "auto"
    assert_lookups(emb)
    explicit = WordEmbeddings(str(path), format=format, device="cpu")
    assert torch.equal(explicit.embedding.weight, emb.embedding.weight)


def test_gzip_and_binary_match_text(tmp_path: Path) -> None:
    text = WordEmbeddings(str(write_text(tmp_path / "v.txt", ENTRIES, header=True)), device="cpu")
    packed = tmp_path / "v.txt.gz"
    packed.write_bytes(gzip.compress((tmp_path / "v.txt").read_bytes()))
    binary = WordEmbeddings(str(write_binary(tmp_path / "v.bin", ENTRIES)), device="cpu")
    for other in (WordEmbeddings(str(packed), device="cpu"), binary):
        assert other.vocab == text.vocab
        assert torch.equal(other.embedding.weight, text.embedding.weight)


def test_table_layout_is_frozen_float32_with_zero_row(tmp_path: Path) -> None:
    emb = WordEmbeddings(str(write_text(tmp_path / "v.txt", ENTRIES, header=True)), device="cpu")
    weight = emb.embedding.weight
    unique = len(ENTRIES) - 1  # "dup" is kept once
    assert len(emb.vocab) == unique and weight.shape == (unique + 1, DIM)
    assert weight.dtype == torch.float32 and not weight.requires_grad
    assert torch.count_nonzero(weight[-1]) == 0
    assert torch.equal(weight[emb.vocab["dup"]], torch.from_numpy(TABLE["dup"]))


def test_many_sentences_in_one_call_equal_one_at_a_time(tmp_path: Path, sentences_a: list[list[str]]) -> None:
    # A vocabulary from the fixture sentences: every other distinct token, half of them lowercased,
    # so the batch mixes exact hits, lowercase hits and unknown tokens of every length.
    distinct = sorted({token for sentence in sentences_a for token in sentence})
    entries = [
        (token.lower() if i % 4 == 0 else token, _RNG.standard_normal(DIM).astype(np.float32))
        for i, token in enumerate(distinct)
        if i % 2 == 0
    ]
    path = write_text(tmp_path / "a.txt", entries, header=False)
    emb = WordEmbeddings(str(path), device="cpu", max_batch_tokens=64)
    table = dict(reversed(entries))  # first occurrence wins
    sentences = sentences_a + [[], ["Paris"]]
    together = emb.embed(sentences)
    assert len(together) == len(sentences)
    for sentence, vectors in zip(sentences, together):
        assert vectors.shape == (len(sentence), DIM) and vectors.dtype == torch.float32
        alone = emb.embed([sentence])[0]
        assert torch.equal(vectors, alone)
        for token, vector in zip(sentence, vectors):
            assert torch.equal(vector, torch.from_numpy(flair_lookup(table, token))), token
    padded, mask = emb([["a", "b", "c"], ["a"]])
    assert padded.shape == (2, 3, DIM) and mask.tolist() == [[True, True, True], [True, False, False]]


def test_word_with_spaces_is_accepted(tmp_path: Path) -> None:
    path = write_text(tmp_path / "g.txt", [("x", ZERO + 1), (". . .", TABLE[". . ."])], header=False)
    emb = WordEmbeddings(str(path))
    [vectors] = emb.embed([[". . ."]])
    assert torch.equal(vectors[0], torch.from_numpy(TABLE[". . ."]))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("2 3\na 1 2 3\nb 1 2\n", r"bad\.txt, line 3: expected a word and 3 numbers, found 2 values"),
        ("2 3\na 1 2 3\nb 1 2 3 4\n", r"bad\.txt, line 3: expected a word and 3 numbers, found 4 values"),
        ("2 3\na 1 abc 3\nb 1 2 3\n", r"bad\.txt, line 2: 'abc' is not a number"),
        ("a 1 2 3\nb 1 2\n", r"bad\.txt, line 2: expected a word and 3 numbers, found 2 values"),
        ("a 1 2 3\n\nb 1 2 x\n", r"bad\.txt, line 3: 'x' is not a number"),
        ("3 3\na 1 2 3\nb 1 2 3\n", r"bad\.txt: the header \(line 1\) promises 3 vectors, the file has 2"),
        ("", r"bad\.txt: no vectors found"),
    ],
)
def test_malformed_text_names_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        WordEmbeddings(str(path))


def test_malformed_binary_and_wrong_explicit_format(tmp_path: Path) -> None:
    full = write_binary(tmp_path / "full.bin", ENTRIES).read_bytes()
    truncated = tmp_path / "cut.bin"
    truncated.write_bytes(full[:-3])
    with pytest.raises(ValueError, match=rf"cut\.bin: record {len(ENTRIES)}: the file ends early"):
        WordEmbeddings(str(truncated))
    headed = write_text(tmp_path / "headed.txt", ENTRIES, header=True)
    with pytest.raises(ValueError, match=r"headed\.txt, line 1: .* header; use format='word2vec'"):
        WordEmbeddings(str(headed), format="glove")
    bare = write_text(tmp_path / "bare.txt", ENTRIES, header=False)
    with pytest.raises(ValueError, match=r"bare\.txt, line 1: expected a 'count dim' header"):
        WordEmbeddings(str(bare), format="word2vec")
    with pytest.raises(ValueError, match="not a gensim KeyedVectors file"):
        WordEmbeddings(str(bare), format="gensim")
    with pytest.raises(ValueError, match="format"):
        WordEmbeddings(str(bare), format="csv")


def test_detect_format_from_content() -> None:
    assert detect_format("x", b"\x80\x04\x95") == "gensim"
    assert detect_format("x.txt", b"the 0.1 0.2\n") == "glove"
    assert detect_format("x.txt", b"1 2\nthe 0.1 0.2\n") == "word2vec"
    assert detect_format("x.vec", b"1 2\nthe 0.1 0.2\n") == "fasttext"
    assert detect_format("x", b"1 2\nthe " + struct.pack("<2f", 0.1, 0.2)) == "word2vec-binary"
    assert detect_format("x", b"1 2\nthe 0.1 abc\n") == "word2vec"  # malformed text stays text
    assert detect_format("x.bin", b"1 2\nthe 0.1 0.2\n") == "word2vec-binary"  # as Flair: .bin is binary


# --- gensim KeyedVectors files, read without gensim ------------------------------------------------
# Plain classes pickled with protocol 2 (as gensim 3 saves) and renamed to gensim's classes in the
# stream, where GLOBAL opcodes name module and class as text. gensim 4 saves protocol 4, whose
# STACK_GLOBAL reaches the same find_class; test_real_gensim_files covers it where gensim is installed.

class KeyedVectors:
    def __init__(self, **state: object) -> None:
        self.__dict__.update(state)


class Word2VecKeyedVectors(KeyedVectors):
    pass


class Vocab(KeyedVectors):
    pass


class Word2Vec(KeyedVectors):
    pass


def gensim_pickle(obj: object, numpy_core: str = "numpy._core") -> bytes:
    data = pickle.dumps(obj, protocol=2)
    for cls, module in (
        (KeyedVectors, "gensim.models.keyedvectors"),
        (Word2VecKeyedVectors, "gensim.models.keyedvectors"),
        (Vocab, "gensim.models.keyedvectors"),
        (Word2Vec, "gensim.models.word2vec"),
    ):
        written = f"c{cls.__module__}\n{cls.__name__}\n".encode()
        data = data.replace(written, f"c{module}\n{cls.__name__}\n".encode())
    assert __name__.encode() not in data
    return data.replace(b"cnumpy._core.", f"c{numpy_core}.".encode())


def unique_entries() -> tuple[list[str], np.ndarray]:
    words = [word for word, _ in ENTRIES if word != "dup"] + ["dup"]
    return words, np.stack([TABLE[word] for word in words])


def gensim4_object(words: list[str], matrix: np.ndarray) -> KeyedVectors:
    return KeyedVectors(
        vector_size=DIM, index_to_key=words, key_to_index={w: i for i, w in enumerate(words)}, next_index=0,
        vectors=matrix, norms=None, expandos={"count": np.arange(len(words))}, mapfile_path=None,
        **{"__numpys": [], "__scipys": [], "__ignoreds": [], "__recursive_saveloads": []},
    )


def write_gensim3(path: Path, words: list[str], matrix: np.ndarray) -> Path:
    """Flair's published layout: gensim 3 Word2VecKeyedVectors, matrix in '<file>.vectors.npy'."""
    # Vocab rows deliberately in reverse insertion order: the row comes from Vocab.index, as in Flair.
    order = list(reversed(range(len(words))))
    vocab = {words[row]: Vocab(count=100 - row, index=row) for row in order}
    kv = Word2VecKeyedVectors(
        vector_size=DIM, vocab=vocab, index2word=words, vectors=None, vectors_norm=None,
        **{"__numpys": ["vectors"], "__scipys": [], "__ignoreds": ["vectors_norm"], "__recursive_saveloads": []},
    )
    path.write_bytes(gensim_pickle(kv, numpy_core="numpy.core"))
    np.save(f"{path}.vectors.npy", matrix)
    return path


def test_gensim4_file_without_gensim(tmp_path: Path) -> None:
    words, matrix = unique_entries()
    path = tmp_path / "vectors.kv"
    path.write_bytes(gensim_pickle(gensim4_object(words, matrix)))
    emb = WordEmbeddings(str(path))
    assert emb.format == "gensim" and emb.model_files() == [str(path)]
    assert_lookups(emb)


def test_gensim3_file_with_side_array_without_gensim(tmp_path: Path) -> None:
    words, matrix = unique_entries()
    path = write_gensim3(tmp_path / "glove.gensim", words, matrix)
    emb = WordEmbeddings(str(path))
    assert emb.model_files() == [str(path), f"{path}.vectors.npy"]
    assert_lookups(emb)
    Path(f"{path}.vectors.npy").unlink()
    with pytest.raises(ModelNotFoundError, match=r"glove\.gensim\.vectors\.npy not found"):
        WordEmbeddings(str(path))


def test_gensim_model_with_wv_and_gzip(tmp_path: Path) -> None:
    words, matrix = unique_entries()
    kv = gensim4_object(words, None)
    kv.__dict__["__numpys"] = ["vectors"]
    model = Word2Vec(wv=kv, **{"__recursive_saveloads": ["wv"], "__numpys": []})
    path = tmp_path / "w2v.model"
    path.write_bytes(gensim_pickle(model))
    np.save(f"{path}.wv.vectors.npy", matrix)
    assert_lookups(WordEmbeddings(str(path)))
    packed = tmp_path / "w2v.model.gz"
    packed.write_bytes(gzip.compress(gensim_pickle(model)))
    np.savez_compressed(f"{packed}.wv.vectors.npz", val=matrix)
    emb = WordEmbeddings(str(packed))
    assert emb.model_files() == [str(packed), f"{packed}.wv.vectors.npz"]
    assert_lookups(emb)


class _RunsCommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_gensim_pickle_cannot_run_code(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "evil.kv"
    path.write_bytes(pickle.dumps({"vectors": _RunsCommand(marker)}, protocol=2))
    refused = r"evil\.kv: not a readable gensim KeyedVectors file: refusing (posix|os|nt)\.system"
    with pytest.raises(ValueError, match=refused):
        WordEmbeddings(str(path))
    assert not marker.exists()
    plain = tmp_path / "plain.kv"
    plain.write_bytes(pickle.dumps({"vectors": np.zeros((1, 2))}, protocol=4))
    with pytest.raises(ValueError, match="holds a dict, not a gensim KeyedVectors object"):
        WordEmbeddings(str(plain))


# --- resolution of Flair's published ids ---------------------------------------------------------

def test_published_id_resolves_through_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror" / "word"
    mirror.mkdir(parents=True)
    words, matrix = unique_entries()
    write_gensim3(mirror / "glove.gensim", words, matrix)
    monkeypatch.setenv("CORPUS_EMBED_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CORPUS_EMBED_MODEL_MIRROR", str(tmp_path / "mirror"))
    emb = WordEmbeddings("glove")
    cached = tmp_path / "cache" / "word" / "glove.gensim"
    assert emb.format == "gensim" and emb.get_config_dict() == {"embeddings": "glove", "format": "auto"}
    assert emb.model_files() == emb.spec.files() == [str(cached), f"{cached}.vectors.npy"]
    assert_lookups(emb)
    (tmp_path / "cache" / "word" / "glove.gensim.vectors.npy").unlink()  # refetched from the mirror
    assert WordEmbeddings("GloVe").model_files() == emb.model_files()  # ids ignore case, as in Flair


def test_published_ids_follow_flair() -> None:
    base = "https://flair.informatik.hu-berlin.de/resources/embeddings/token/"
    assert WORD_MODELS["glove"] == base + "glove.gensim"
    assert WORD_MODELS["en"] == WORD_MODELS["news"] == base + "en-fasttext-news-300d-1M"
    assert WORD_MODELS["de"] == WORD_MODELS["de-wiki"] == base + "de-wiki-fasttext-300d-1M"
    assert WORD_MODELS["de-crawl"] == base + "de-crawl-fasttext-300d-1M"


def test_published_id_miss_raises_model_not_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        socket.getaddrinfo("flair.informatik.hu-berlin.de", 443)
    except OSError:
        pass
    else:
        pytest.skip("the published host is reachable: this checks the offline miss without downloading")
    (tmp_path / "mirror").mkdir()
    monkeypatch.setenv("CORPUS_EMBED_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CORPUS_EMBED_MODEL_MIRROR", str(tmp_path / "mirror"))
    with pytest.raises(ModelNotFoundError, match=r"word model 'glove' not found.*mirror .*word/glove\.gensim"):
        WordEmbeddings("glove")


def test_unknown_name_raises_model_not_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORPUS_EMBED_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ModelNotFoundError, match=r"no-such-vectors.*Published names: .*glove"):
        WordEmbeddings("no-such-vectors")


# --- the real gensim, where installed (optional extra) ---------------------------------------------

def test_real_gensim_files(tmp_path: Path) -> None:
    gensim_models = pytest.importorskip("gensim.models")
    words, matrix = unique_entries()
    kv = gensim_models.KeyedVectors(vector_size=DIM)
    kv.add_vectors(words, matrix)
    inline, separate = tmp_path / "inline.kv", tmp_path / "separate.kv"
    kv.save(str(inline))
    kv.save(str(separate), separately=["vectors"])
    kv.save_word2vec_format(str(tmp_path / "g.bin"), binary=True)
    kv.save_word2vec_format(str(tmp_path / "g.txt"), binary=False)
    for path in (inline, separate, tmp_path / "g.bin", tmp_path / "g.txt"):
        assert_lookups(WordEmbeddings(str(path)))


def test_cache_names_keep_clashing_published_files_apart() -> None:
    from actors.stack.registry import _cache_name

    table = {"a": "https://x/one/best-lm.pt", "b": "https://x/two/best-lm.pt", "c": "https://x/c.pt", "c-alias": "https://x/c.pt"}
    assert _cache_name("a", table["a"], table) == "a-best-lm.pt"
    assert _cache_name("b", table["b"], table) == "b-best-lm.pt"
    assert _cache_name("c", table["c"], table) == _cache_name("c-alias", table["c"], table) == "c.pt"
    assert _cache_name("https://y/v.gensim.vectors.npy", "https://y/v.gensim.vectors.npy", table) == "v.gensim.vectors.npy"
