"""TransformerDocumentEmbeddings against flair 0.15.1's outputs on the packaged MiniLM.

Every key of ``frontend/docemb_setA.npz`` (``"{layers}/{cls_pooling}/{int(layer_mean)}/t{i}"``, six
settings x 10 raw texts) is checked, one text per call and all texts in one call. flair made each
vector from ``Sentence(text)``, so these also check that ``actors.text`` feeds the model flair's
tokens. Each setting is built once per module; all share one loaded model.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
import torch

from actors.stack.transformer_document import TransformerDocumentEmbeddings
from actors.text import tokenize

pytestmark = pytest.mark.usefixtures("torch_one_thread")

ATOL = RTOL = 1e-4
HIDDEN = 384
FRONTEND = Path(__file__).resolve().parents[1] / "fixtures" / "frontend"
TEXTS: list[str] = json.loads((FRONTEND / "textsA.json").read_text())

Build = Callable[..., TransformerDocumentEmbeddings]


@pytest.fixture(scope="module")
def reference() -> Iterator[dict[str, np.ndarray]]:
    with np.load(FRONTEND / "docemb_setA.npz") as arrays:
        yield {key: arrays[key] for key in arrays.files}


@pytest.fixture(scope="module")
def build() -> Iterator[Build]:
    built: dict[tuple, TransformerDocumentEmbeddings] = {}

    def make(**kwargs: Any) -> TransformerDocumentEmbeddings:
        key = tuple(sorted((name, repr(value)) for name, value in kwargs.items()))
        if key not in built:
            built[key] = TransformerDocumentEmbeddings(device="cpu", **kwargs)
        return built[key]

    yield make
    built.clear()


def _settings(reference: dict[str, np.ndarray]) -> list[tuple[str, str, bool]]:
    names = sorted({key.rsplit("/", 1)[0] for key in reference})
    return [(layers, pooling, bool(int(mean))) for layers, pooling, mean in (n.rsplit("/", 2) for n in names)]


def _make(build: Build, layers: str, pooling: str, mean: bool) -> TransformerDocumentEmbeddings:
    return build(layers=layers, cls_pooling=pooling, layer_mean=mean)


def _expected(reference: dict[str, np.ndarray], layers: str, pooling: str, mean: bool) -> np.ndarray:
    return np.stack([reference[f"{layers}/{pooling}/{int(mean)}/t{i}"] for i in range(len(TEXTS))])


def test_fixture_has_the_six_settings(reference: dict[str, np.ndarray]) -> None:
    assert len(_settings(reference)) == 6
    assert len(reference) == 6 * len(TEXTS)


@pytest.mark.parametrize("one_per_call", [False, True], ids=["all-in-one-call", "one-per-call"])
def test_matches_flair_for_every_fixture_setting(
    build: Build, reference: dict[str, np.ndarray], one_per_call: bool
) -> None:
    worst = {}
    for layers, pooling, mean in _settings(reference):
        embedding = _make(build, layers, pooling, mean)
        expected = _expected(reference, layers, pooling, mean)
        if one_per_call:
            got = torch.cat([embedding.embed_texts([text]) for text in TEXTS])
        else:
            got = embedding.embed_texts(TEXTS)
        assert got.dtype == torch.float32 and got.device.type == "cpu"
        assert tuple(got.shape) == expected.shape == (len(TEXTS), embedding.embedding_length)
        np.testing.assert_allclose(got.numpy(), expected, atol=ATOL, rtol=RTOL, err_msg=f"{layers}/{pooling}/{mean}")
        worst[(layers, pooling, mean)] = float(np.abs(got.numpy() - expected).max())
    print("max abs error per setting:", worst)


def test_embedding_length_follows_layer_mean(build: Build) -> None:
    assert _make(build, "-1,-2", "cls", False).embedding_length == 2 * HIDDEN
    assert _make(build, "-1,-2,-3,-4", "mean", True).embedding_length == HIDDEN
    assert build(layers="all", cls_pooling="mean", layer_mean=False).embedding_length == 7 * HIDDEN


def test_results_do_not_depend_on_batch_composition(reference: dict[str, np.ndarray]) -> None:
    """A tiny token budget cuts one call into many batches; the vectors stay flair's."""
    tiny = TransformerDocumentEmbeddings(layers="-1", cls_pooling="mean", layer_mean=True, device="cpu",
                                         max_batch_tokens=40)
    order = [3, 0, 9, 5, 1, 8, 2, 7, 6, 4]
    got = tiny.embed_texts([TEXTS[i] for i in order])
    expected = _expected(reference, "-1", "mean", True)[order]
    np.testing.assert_allclose(got.numpy(), expected, atol=ATOL, rtol=RTOL)


def test_texts_without_tokens_give_zero_vectors(build: Build, reference: dict[str, np.ndarray]) -> None:
    embedding = _make(build, "-1", "max", True)
    got = embedding.embed_texts(["", TEXTS[2], "  \n\t ", "\u200b"])
    assert torch.count_nonzero(got[[0, 2, 3]]) == 0
    np.testing.assert_allclose(got[1].numpy(), reference["-1/max/1/t2"], atol=ATOL, rtol=RTOL)
    assert tuple(embedding.embed_texts([]).shape) == (0, HIDDEN)


def _long_text(embedding: TransformerDocumentEmbeddings) -> str:
    """A fixture text repeated until its WordPieces overflow the model's window."""
    text = " ".join([TEXTS[0]] * 40)
    pieces = embedding.tokenizer(tokenize(text), is_split_into_words=True, add_special_tokens=True)["input_ids"]
    assert len(pieces) > embedding.max_length == 512
    return text


@pytest.mark.parametrize("pooling", ["cls", "mean", "max"])
def test_long_text_is_truncated_to_the_window_as_flair_does(build: Build, pooling: str) -> None:
    """flair's document embedding truncates at ``model_max_length`` (no strided windows).

    So the vector is the model's output on ``[CLS]`` + the first 510 WordPieces + ``[SEP]``, and
    whatever follows the window changes nothing.
    """
    embedding = _make(build, "-1", pooling, True)
    text = _long_text(embedding)
    got = embedding.embed_texts([text, text + " Completely different closing words, nothing alike."])
    np.testing.assert_array_equal(got[0].numpy(), got[1].numpy())

    # The same vector straight from the encoder on the truncated input, no batching involved.
    ids = embedding.tokenizer(tokenize(text), is_split_into_words=True, truncation=True, return_tensors="pt")
    assert ids["input_ids"].shape[1] == 512 and ids["input_ids"][0, -1] == embedding.tokenizer.sep_token_id
    with torch.inference_mode():
        states = embedding.model(input_ids=ids["input_ids"]).hidden_states[-1][0]
    direct = {"cls": states[0], "mean": states.mean(dim=0), "max": states.max(dim=0).values}[pooling]
    np.testing.assert_allclose(got[0].numpy(), direct.numpy(), atol=1e-5, rtol=1e-5)
    assert not np.allclose(got[0].numpy(), embedding.embed_texts([TEXTS[0]])[0].numpy(), atol=1e-3)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="cls_pooling"):
        TransformerDocumentEmbeddings(cls_pooling="first", device="cpu")
    with pytest.raises(ValueError, match="precision"):
        TransformerDocumentEmbeddings(precision="int8", device="cpu")
    with pytest.raises(ValueError, match="max_batch_tokens"):
        TransformerDocumentEmbeddings(max_batch_tokens=0, device="cpu")
