"""FlairEmbeddings against flair 0.15.1's own outputs on the fixture LMs, and the restricted loader."""
from __future__ import annotations

import builtins
import json
import os
import pickletools
import shutil
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from actors.stack.flair import FlairEmbeddings
from actors.stack.registry import FLAIR_MODELS, ModelNotFoundError
from actors.stack.safe_pickle import FlairDictionary, UnsafePickleError, load_flair_lm

ATOL = 1e-5

# fixture family -> (model file, with_whitespace, embedding_length)
FAMILIES = {
    "forward": ("flair-tiny-forward.pt", True, 32),
    "backward": ("flair-tiny-backward.pt", True, 32),
    "forward-proj": ("flair-tiny-forward-proj.pt", True, 24),
    "forward.no_whitespace": ("flair-tiny-forward.pt", False, 32),
    "backward.no_whitespace": ("flair-tiny-backward.pt", False, 32),
}


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def flair_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "flair"


@pytest.fixture(scope="module")
def reference(flair_dir: Path) -> dict[str, np.ndarray]:
    with np.load(flair_dir / "flair_setA.npz") as arrays:
        return {key: arrays[key] for key in arrays.files}


@pytest.fixture(scope="module")
def details(flair_dir: Path) -> dict:
    return json.loads((flair_dir / "flair_setA.details.json").read_text())


def _max_error(vectors: list[torch.Tensor], reference: dict[str, np.ndarray], family: str) -> float:
    worst = 0.0
    for i, tensor in enumerate(vectors):
        expected = reference[f"{family}/s{i}"]
        assert tensor.dtype == torch.float32 and tensor.device.type == "cpu"
        assert tuple(tensor.shape) == expected.shape, (family, i)
        worst = max(worst, float(np.abs(tensor.numpy() - expected).max()))
    return worst


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_all_sentences_in_one_call_match_flair(family, flair_dir, reference, sentences_a):
    file, with_whitespace, dim = FAMILIES[family]
    embeddings = FlairEmbeddings(str(flair_dir / file), with_whitespace=with_whitespace, device="cpu")
    assert embeddings.embedding_length == dim
    assert _max_error(embeddings.embed(sentences_a), reference, family) <= ATOL


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_one_sentence_at_a_time_matches_flair(family, flair_dir, reference, sentences_a):
    file, with_whitespace, _ = FAMILIES[family]
    embeddings = FlairEmbeddings(str(flair_dir / file), with_whitespace=with_whitespace, device="cpu")
    vectors = [embeddings.embed([sentence])[0] for sentence in sentences_a]
    assert _max_error(vectors, reference, family) <= ATOL


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_small_chunks_and_small_batches_give_the_same_numbers(family, flair_dir, reference, sentences_a):
    file, with_whitespace, _ = FAMILIES[family]
    embeddings = FlairEmbeddings(
        str(flair_dir / file), with_whitespace=with_whitespace, chars_per_chunk=16, max_batch_chars=300, device="cpu"
    )
    assert _max_error(embeddings.embed(sentences_a), reference, family) <= ATOL


@pytest.mark.parametrize("family", ["forward", "backward", "forward-proj"])
def test_lm_input_string_char_ids_and_offsets_match_flair(family, flair_dir, details, sentences_a):
    file, _, _ = FAMILIES[family]
    with_ws = FlairEmbeddings(str(flair_dir / file), with_whitespace=True, device="cpu")
    without_ws = FlairEmbeddings(str(flair_dir / file), with_whitespace=False, device="cpu")
    for i, sentence in enumerate(sentences_a):
        expected = details[family][f"s{i}"]
        string, lm_input = with_ws.lm_input(sentence)
        assert string == expected["lm_input_string"]
        assert lm_input.char_ids == expected["char_ids"]
        assert lm_input.positions == expected["offsets_with_whitespace"]
        assert without_ws.lm_input(sentence)[1].positions == expected["offsets_without_whitespace"]


@pytest.mark.parametrize("family", ["forward", "backward", "forward-proj"])
def test_raw_character_states_match_flair(family, flair_dir, reference, sentences_a):
    file, _, _ = FAMILIES[family]
    embeddings = FlairEmbeddings(str(flair_dir / file), device="cpu")
    with torch.inference_mode():
        for i, sentence in enumerate(sentences_a):
            ids = torch.tensor(embeddings.lm_input(sentence)[1].char_ids).unsqueeze(1)
            states, _ = embeddings.lm(ids)
            expected = reference[f"{family}.char_states/s{i}"]
            np.testing.assert_allclose(states[:, 0].numpy(), expected, rtol=0, atol=ATOL)


def test_batch_order_and_empty_sentences(flair_dir, reference, sentences_a):
    embeddings = FlairEmbeddings(str(flair_dir / "flair-tiny-backward.pt"), max_batch_chars=120, device="cpu")
    order = [7, 4, 0, 6, 3, 5, 1, 2]
    mixed = [sentences_a[i] for i in order]
    mixed.insert(3, [])
    vectors = embeddings.embed(mixed)
    assert tuple(vectors.pop(3).shape) == (0, 32)
    for position, i in enumerate(order):
        np.testing.assert_allclose(vectors[position].numpy(), reference[f"backward/s{i}"], rtol=0, atol=ATOL)
    assert embeddings.embed([]) == []


def test_unknown_characters_read_as_unk(flair_dir):
    embeddings = FlairEmbeddings(str(flair_dir / "flair-tiny-forward.pt"), device="cpu")
    string, lm_input = embeddings.lm_input(["日本", "x"])
    assert string == "\n日本 x "
    assert lm_input.char_ids[1:3] == [0, 0]
    assert embeddings.embed([["日本", "x"]])[0].shape == (2, 32)


def test_weights_are_frozen_submodules_and_config_describes_output(flair_dir):
    path = str(flair_dir / "flair-tiny-forward-proj.pt")
    embeddings = FlairEmbeddings(path, device="cpu")
    names = {name for name, _ in embeddings.named_parameters()}
    assert {"lm.encoder.weight", "lm.rnn.weight_ih_l0", "lm.proj.weight"} <= names
    assert not any(name.startswith("lm.decoder") for name in names)
    assert not any(p.requires_grad for p in embeddings.parameters())
    assert embeddings.model_files() == [path]
    identity = embeddings.spec.identity()
    json.dumps(identity)
    # chars_per_chunk bounds memory and never changes a vector: not part of the identity
    assert identity["with_whitespace"] is True and "chars_per_chunk" not in identity and "model" not in identity
    padded, mask = embeddings([["a", "b"], ["c"]])
    assert tuple(padded.shape) == (2, 2, 24) and mask.tolist() == [[True, True], [True, False]]


def test_loader_reads_flair_state_without_importing_flair(flair_dir):
    state = load_flair_lm(flair_dir / "flair-tiny-forward.pt")
    assert isinstance(state["dictionary"], FlairDictionary)
    assert state["dictionary"].idx2item[0] == b"<unk>"
    assert state["is_forward_lm"] is True and state["nout"] is None and state["document_delimiter"] == "\n"
    assert "decoder.weight" in state["state_dict"]
    assert "flair" not in sys.modules and "flair.data" not in sys.modules


class _Payload:
    """Pickles as ``call(*args)``: a GLOBAL plus REDUCE, the classic pickle code-execution gadget."""

    def __init__(self, call, args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


def _save_as_flair(state: dict, path: Path, monkeypatch, protocol: int = 4, zip_format: bool = True) -> None:
    """Write ``state`` the way flair's ``LanguageModel.save`` does, its Dictionary named ``flair.data.Dictionary``."""
    flair_data = types.ModuleType("flair.data")

    class Dictionary:
        pass

    Dictionary.__module__, Dictionary.__qualname__ = "flair.data", "Dictionary"
    flair_data.Dictionary = Dictionary
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "flair", types.ModuleType("flair"))
        patch.setitem(sys.modules, "flair.data", flair_data)
        source = state["dictionary"]
        dictionary = Dictionary()
        dictionary.__dict__.update(
            {key: getattr(source, key) for key in ("item2idx", "idx2item", "add_unk", "multi_label", "span_labels")}
        )
        dictionary.__dict__.update(getattr(source, "injected", {}))
        torch.save(
            {**state, "dictionary": dictionary},
            path,
            pickle_protocol=protocol,
            _use_new_zipfile_serialization=zip_format,
        )


def _pickle_ops(path: Path) -> tuple[set[str], set[str]]:
    """Opcode names and strings of the pickle inside a torch zip file, read without unpickling."""
    with zipfile.ZipFile(path) as archive:
        data = archive.read(next(n for n in archive.namelist() if n.endswith("/data.pkl")))
    ops = list(pickletools.genops(data))
    return {op.name for op, _, _ in ops}, {arg for _, arg, _ in ops if isinstance(arg, str)}


def test_a_file_written_like_flairs_loads_and_embeds(tmp_path, flair_dir, reference, sentences_a, monkeypatch):
    path = tmp_path / "rewritten.pt"
    _save_as_flair(load_flair_lm(flair_dir / "flair-tiny-forward.pt"), path, monkeypatch)
    assert {"flair.data", "Dictionary"} <= _pickle_ops(path)[1]
    embeddings = FlairEmbeddings(str(path), device="cpu")
    assert _max_error(embeddings.embed(sentences_a[:4]), reference, "forward") <= ATOL


@pytest.mark.parametrize("protocol", [2, 4])
def test_older_torch_file_format_loads(protocol, tmp_path, flair_dir, reference, sentences_a, monkeypatch):
    # Flair's published LMs predate torch's zip format; protocol 2 stores bytes via _codecs.encode.
    path = tmp_path / "legacy.pt"
    _save_as_flair(load_flair_lm(flair_dir / "flair-tiny-backward.pt"), path, monkeypatch, protocol, zip_format=False)
    assert not zipfile.is_zipfile(path)
    embeddings = FlairEmbeddings(str(path), device="cpu")
    assert _max_error(embeddings.embed(sentences_a[:4]), reference, "backward") <= ATOL


_CALLS = {"os.system": os.system, "builtins.eval": builtins.eval, "builtins.exec": builtins.exec}


@pytest.mark.parametrize("where", ["top-level value", "dictionary state"])
@pytest.mark.parametrize("call_name", sorted(_CALLS))
def test_malicious_pickle_is_refused_and_its_payload_never_runs(call_name, where, tmp_path, flair_dir, monkeypatch):
    marker = tmp_path / "payload-ran"
    call = _CALLS[call_name]
    code = f"open({str(marker)!r}, 'w').write('ran')"
    payload = _Payload(call, (f"touch {marker}",) if call is os.system else (code,))
    state = load_flair_lm(flair_dir / "flair-tiny-forward.pt")
    if where == "top-level value":
        state["dropout"] = payload
    else:
        state["dictionary"].injected = {"extra": payload}
    path = tmp_path / "evil.pt"
    _save_as_flair(state, path, monkeypatch)
    ops, strings = _pickle_ops(path)
    assert "REDUCE" in ops and call.__name__ in strings

    qualified = f"{call.__module__}.{call.__name__}"  # os.system pickles as posix.system on Linux
    with pytest.raises(UnsafePickleError) as refused:
        load_flair_lm(path)
    assert qualified in str(refused.value) and str(path) in str(refused.value)
    with pytest.raises(UnsafePickleError):
        FlairEmbeddings(str(path), device="cpu")
    assert not marker.exists()

    # Control: an unrestricted load of the same file does run the payload.
    flair_data = types.ModuleType("flair.data")
    flair_data.Dictionary = type("Dictionary", (), {})
    monkeypatch.setitem(sys.modules, "flair", types.ModuleType("flair"))
    monkeypatch.setitem(sys.modules, "flair.data", flair_data)
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_dictionary_state_must_be_plain_data(tmp_path, flair_dir, monkeypatch):
    state = load_flair_lm(flair_dir / "flair-tiny-forward.pt")
    state["dictionary"].idx2item = ["not bytes"]
    path = tmp_path / "odd.pt"
    _save_as_flair(state, path, monkeypatch)
    with pytest.raises(UnsafePickleError, match="idx2item"):
        load_flair_lm(path)


def test_forced_weights_only_mode_fails_with_a_clear_message(monkeypatch, flair_dir):
    monkeypatch.setenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(RuntimeError, match="TORCH_FORCE_WEIGHTS_ONLY_LOAD"):
        load_flair_lm(flair_dir / "flair-tiny-forward.pt")


@pytest.fixture
def model_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("CORPUS_EMBED_CACHE", str(cache))
    monkeypatch.delenv("CORPUS_EMBED_MODEL_MIRROR", raising=False)
    return cache


def test_unknown_published_id_lists_where_it_looked(model_cache):
    with pytest.raises(ModelNotFoundError) as missing:
        FlairEmbeddings("klingon-forward", device="cpu")
    message = str(missing.value)
    assert "klingon-forward" in message
    assert "local path" in message and str(model_cache / "flair" / "klingon-forward") in message
    assert "CORPUS_EMBED_MODEL_MIRROR" in message and "news-forward" in message


def test_published_id_resolves_to_the_file_in_the_cache(model_cache, flair_dir, reference, sentences_a):
    file_name = FLAIR_MODELS["news-forward"].rsplit("/", 1)[-1]
    (model_cache / "flair").mkdir(parents=True)
    shutil.copy(flair_dir / "flair-tiny-forward.pt", model_cache / "flair" / file_name)
    for name in ("news-forward", "News-Forward"):
        embeddings = FlairEmbeddings(name, device="cpu")
        assert embeddings.model_path == str(model_cache / "flair" / file_name)
        assert embeddings.get_config_dict()["model"] == name
        assert _max_error(embeddings.embed(sentences_a[:3]), reference, "forward") <= ATOL


def test_tokenized_lm_false_reads_the_text_as_written(flair_dir):
    """flair's ``tokenized_lm=False``: the LM reads ``Sentence.to_plain_string()`` and an offset skips
    a position after a token only where whitespace follows it."""
    from actors.embedder import Word
    from actors.text import tokenize_with_whitespace

    tokens = [Word(token.text, token.whitespace_after) for token in tokenize_with_whitespace("I didn't go.")]
    assert [(t, t.whitespace_after) for t in tokens] == [("I", 1), ("did", 0), ("n't", 1), ("go", 0), (".", 0)]
    for name, forward in (("flair-tiny-forward.pt", True), ("flair-tiny-backward.pt", False)):
        plain = FlairEmbeddings(str(flair_dir / name), device="cpu", tokenized_lm=False)
        tokenized = FlairEmbeddings(str(flair_dir / name), device="cpu")
        string, lm_input = plain.lm_input(tokens)
        text = "I didn't go."
        assert string == "\n" + (text if forward else text[::-1]) + " "
        assert tokenized.lm_input(tokens)[0] == "\n" + ("I did n't go ." if forward else "I did n't go ."[::-1]) + " "
        if forward:   # the state after each token's last character: the next character of the text
            assert [string[p] for p in lm_input.positions] == [" ", "n", " ", ".", " "]
        # The vectors are the LM's states at those positions of that string.
        with torch.inference_mode():
            states, _ = plain.lm(torch.tensor(lm_input.char_ids).unsqueeze(1))
        expected = states[lm_input.positions, 0]
        torch.testing.assert_close(plain.embed([tokens])[0], expected)
        assert not torch.allclose(plain.embed([tokens])[0], tokenized.embed([tokens])[0])
        # Plain strings count as followed by one space: the same as the tokenized LM.
        torch.testing.assert_close(plain.embed([[str(t) for t in tokens]])[0], tokenized.embed([tokens])[0])
