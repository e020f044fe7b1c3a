"""ELMoEmbeddings against the outputs of AllenNLP 2.10's own ELMo modules on the elmo-tiny files."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from actors.stack.elmo import ELMoEmbeddings
from actors.stack.elmo_model import batch_char_ids, word_char_ids
from actors.stack.registry import CACHE_ENV, MIRROR_ENV, ModelNotFoundError

ATOL = 1e-5
N_LAYERS, WIDTH = 3, 32


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def elmo_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "elmo-tiny"


@pytest.fixture(scope="module")
def reference(elmo_dir: Path) -> dict[str, np.ndarray]:
    with np.load(elmo_dir / "elmo_setA.npz") as arrays:
        return {key: arrays[key] for key in arrays.files}


def make(elmo_dir: Path, **kwargs) -> ELMoEmbeddings:
    return ELMoEmbeddings(
        options_file=str(elmo_dir / "options.json"), weight_file=str(elmo_dir / "weights.hdf5"), **kwargs
    )


@pytest.fixture(scope="module")
def elmo_all(elmo_dir: Path) -> ELMoEmbeddings:
    return make(elmo_dir, embedding_mode="all")


def as_layers(vectors: torch.Tensor) -> np.ndarray:
    """``[n, 3 * 32]`` (mode all) → ``[3, n, 32]``, the fixture's layout."""
    return vectors.numpy().reshape(-1, N_LAYERS, WIDTH).transpose(1, 0, 2)


def max_error(outputs: list[torch.Tensor], reference: dict[str, np.ndarray], indexes: list[int]) -> float:
    worst = 0.0
    for vectors, i in zip(outputs, indexes):
        expected = reference[f"layers/s{i}"]
        got = as_layers(vectors)
        assert got.shape == expected.shape
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def test_char_ids_match_allennlp(sentences_a, reference):
    for i, sentence in enumerate(sentences_a):
        ids = np.array([word_char_ids(word) for word in sentence], dtype=np.int32)
        np.testing.assert_array_equal(ids, reference[f"char_ids/s{i}"])
    # The 63-byte token is cut to 48 bytes between the word markers.
    long_word = max(sentences_a[6], key=len)
    assert len(long_word.encode()) > 48
    assert word_char_ids(long_word)[49] == 260 and word_char_ids(long_word)[48] == ord(long_word[47]) + 1


def test_boundary_tokens_and_padding():
    ids, lengths = batch_char_ids([["a", "b"], ["c"]])
    assert ids.shape == (2, 4, 50) and lengths.tolist() == [4, 3]
    assert ids[0, 0, :4].tolist() == [259, 257, 260, 261]  # <S>
    assert ids[0, 3, :4].tolist() == [259, 258, 260, 261]  # </S>
    assert ids[1, 2, :4].tolist() == [259, 258, 260, 261]  # </S> right after a shorter sentence
    assert int(ids[1, 3].abs().sum()) == 0  # padding token: all zeros


def test_network_with_boundaries_in_one_padded_batch(elmo_all, sentences_a, reference):
    ids, lengths = batch_char_ids(sentences_a)
    with torch.inference_mode():
        layers = elmo_all.bilm(ids, lengths, torch.float64).numpy()
    for i, sentence in enumerate(sentences_a):
        n = len(sentence) + 2
        np.testing.assert_allclose(layers[:, i, :n], reference[f"with_boundaries/s{i}"], rtol=0, atol=ATOL)
        assert not layers[:, i, n:].any(), "padding positions must be zero"


def test_all_sentences_in_one_call(elmo_all, sentences_a, reference):
    outputs = elmo_all.embed(sentences_a)
    assert all(v.dtype == torch.float32 and v.device.type == "cpu" for v in outputs)
    assert [v.shape for v in outputs] == [(len(s), 3 * 2 * 16) for s in sentences_a]
    assert max_error(outputs, reference, list(range(len(sentences_a)))) <= ATOL


def test_batch_composition_does_not_change_vectors(elmo_dir, elmo_all, sentences_a, reference):
    together = elmo_all.embed(sentences_a)
    one_by_one = [elmo_all.embed([sentence])[0] for sentence in sentences_a]
    order = list(range(len(sentences_a)))
    random.Random(7).shuffle(order)
    shuffled = elmo_all.embed([sentences_a[i] for i in order])
    # A small budget: many batches, each padded to a different length.
    small_batches = make(elmo_dir, max_batch_tokens=40).embed(sentences_a)
    indexes = list(range(len(sentences_a)))
    assert max_error(one_by_one, reference, indexes) <= ATOL
    assert max_error(shuffled, reference, order) <= ATOL
    assert max_error(small_batches, reference, indexes) <= ATOL
    for i in indexes:
        torch.testing.assert_close(one_by_one[i], together[i], rtol=0, atol=ATOL)
        torch.testing.assert_close(shuffled[order.index(i)], together[i], rtol=0, atol=ATOL)


def test_embedding_modes(elmo_dir, sentences_a, reference):
    top, average = make(elmo_dir, embedding_mode="top"), make(elmo_dir, embedding_mode="average")
    assert top.embedding_length == average.embedding_length == 32
    for i, (t, a) in enumerate(zip(top.embed(sentences_a), average.embed(sentences_a))):
        np.testing.assert_allclose(t.numpy(), reference[f"layers/s{i}"][-1], rtol=0, atol=ATOL)
        np.testing.assert_allclose(a.numpy(), reference[f"mix/s{i}"], rtol=0, atol=ATOL)
        np.testing.assert_allclose(a.numpy(), reference[f"layers/s{i}"].mean(axis=0), rtol=0, atol=ATOL)


def test_float32_recurrence_stays_close(elmo_dir, sentences_a, reference):
    # Plain float32 drifts by about the reference's own rounding (see ELMoEmbeddings' docstring).
    outputs = make(elmo_dir, precision="float32").embed(sentences_a)
    assert max_error(outputs, reference, list(range(len(sentences_a)))) <= 5e-5


def test_clipping_is_applied(elmo_dir, sentences_a, reference):
    unclipped = make(elmo_dir)
    unclipped.bilm.cell_clip = unclipped.bilm.proj_clip = None
    (vectors,) = unclipped.embed([sentences_a[5]])
    assert np.abs(as_layers(vectors) - reference["layers/s5"]).max() > 1.0


def test_model_folder_files_and_config(elmo_dir, sentences_a, reference):
    elmo = ELMoEmbeddings(model=str(elmo_dir), embedding_mode="top")
    assert [Path(p).name for p in elmo.model_files()] == ["options.json", "weights.hdf5"]
    assert json.loads(json.dumps(elmo.get_config_dict()))["embedding_mode"] == "top"
    assert elmo.get_config_dict() != make(elmo_dir, embedding_mode="all").get_config_dict()
    assert elmo.model_files() == elmo.spec.files()
    assert not any(p.requires_grad for p in elmo.parameters())
    np.testing.assert_allclose(elmo.embed([sentences_a[0]])[0].numpy(), reference["layers/s0"][-1], atol=ATOL)


def test_empty_sentences_and_padded_forward(elmo_all, sentences_a, reference):
    assert elmo_all.embed([]) == []
    outputs = elmo_all.embed([[], sentences_a[4], []])
    assert [tuple(v.shape) for v in outputs] == [(0, 96), (1, 96), (0, 96)]
    np.testing.assert_allclose(as_layers(outputs[1]), reference["layers/s4"], rtol=0, atol=ATOL)
    padded, mask = elmo_all([sentences_a[4], sentences_a[0]])
    assert padded.shape == (2, 10, 96) and mask.sum().item() == 11


def test_unknown_model_lists_places_looked(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    with pytest.raises(ModelNotFoundError) as error:
        ELMoEmbeddings(model="no-such-elmo")
    message = str(error.value)
    assert "no-such-elmo" in message and "Looked at" in message
    assert str(tmp_path) in message and "original" in message


def test_bad_arguments(elmo_dir):
    with pytest.raises(ValueError, match="embedding_mode"):
        make(elmo_dir, embedding_mode="last")
    with pytest.raises(ValueError, match="precision"):
        make(elmo_dir, precision="int8")
