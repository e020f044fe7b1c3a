"""TransformerWordEmbeddings and ScalarMix against flair 0.15.1's outputs on the packaged MiniLM.

Every key of ``transformer/transformer_setA.npz`` (``"{layers}/{pooling}/{mean|concat}/s{i}"``) is
checked, embedding all sentences in one call and one sentence per call. Each distinct setting is
built once per module; all of them share one loaded model.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
import torch

from actors.stack.scalar_mix import ScalarMix
from actors.stack.transformer import TransformerWordEmbeddings

ATOL = RTOL = 1e-4
HIDDEN = 384
LAYER_SETS = ("-1", "-1,-2,-3,-4", "all")
POOLINGS = ("first", "last", "first_last", "mean")
# The fixtures leave out all/*/concat (seven layers concatenated) to stay small.
SETTINGS = [
    f"{layers}/{pool}/{combine}"
    for layers in LAYER_SETS
    for pool in POOLINGS
    for combine in ("mean", "concat")
    if not (layers == "all" and combine == "concat")
]

Build = Callable[..., TransformerWordEmbeddings]


@pytest.fixture(scope="module")
def reference(fixtures_dir: Path) -> Iterator[Any]:
    with np.load(fixtures_dir / "transformer" / "transformer_setA.npz") as arrays:
        yield {key: arrays[key] for key in arrays.files}


@pytest.fixture(scope="module")
def tokenization(fixtures_dir: Path) -> dict[str, Any]:
    return json.loads((fixtures_dir / "transformer" / "transformer_setA.tokenization.json").read_text())


@pytest.fixture(scope="module")
def build() -> Iterator[Build]:
    """Build each distinct setting once; holding them keeps the shared model loaded."""
    built: dict[tuple, TransformerWordEmbeddings] = {}

    def make(**kwargs: Any) -> TransformerWordEmbeddings:
        key = tuple(sorted((name, repr(value)) for name, value in kwargs.items()))
        if key not in built:
            built[key] = TransformerWordEmbeddings(device="cpu", **kwargs)
        return built[key]

    yield make
    built.clear()


def _setting(name: str) -> dict[str, Any]:
    layers, pooling, combine = name.split("/")
    return {"layers": layers, "subtoken_pooling": pooling, "layer_mean": combine == "mean"}


def _close(actual: torch.Tensor, expected: np.ndarray, what: str) -> float:
    assert actual.dtype == torch.float32 and actual.device.type == "cpu", what
    assert tuple(actual.shape) == expected.shape, f"{what}: {tuple(actual.shape)} != {expected.shape}"
    np.testing.assert_allclose(actual.numpy(), expected, atol=ATOL, rtol=RTOL, err_msg=what)
    return float(np.abs(actual.numpy() - expected).max()) if expected.size else 0.0


def test_every_fixture_key_is_checked(reference: dict) -> None:
    assert {key.rsplit("/", 1)[0] for key in reference} == set(SETTINGS)


@pytest.mark.parametrize("setting", SETTINGS)
def test_matches_flair(setting: str, build: Build, reference: dict, sentences_a: list) -> None:
    keys = {i: f"{setting}/s{i}" for i in range(len(sentences_a)) if f"{setting}/s{i}" in reference}
    assert len(keys) >= 7
    embedding = build(**_setting(setting))
    indexes = sorted(keys)
    together = embedding.embed([sentences_a[i] for i in indexes])
    for i, vectors in zip(indexes, together):
        _close(vectors, reference[keys[i]], f"{keys[i]} (one call)")
    for i in indexes:
        (alone,) = embedding.embed([sentences_a[i]])
        _close(alone, reference[keys[i]], f"{keys[i]} (alone)")


def test_small_batch_budget_gives_the_same_vectors(build: Build, reference: dict, sentences_a: list) -> None:
    """Windows of the long sentence land in different batches; mean pooling spans windows."""
    embedding = build(layers="-1,-2,-3,-4", subtoken_pooling="mean", max_batch_tokens=600)
    for i, vectors in zip((7, 2), embedding.embed([sentences_a[7], sentences_a[2]])):
        _close(vectors, reference[f"-1,-2,-3,-4/mean/mean/s{i}"], f"s{i}")


def test_scalar_mix_uniform_equals_layer_mean(build: Build, reference: dict, sentences_a: list) -> None:
    embedding = build(layers="-1,-2,-3,-4", use_scalar_mix=True)
    assert embedding.embedding_length == HIDDEN
    for i, vectors in enumerate(embedding.embed(sentences_a[:7])):
        _close(vectors, reference[f"-1,-2,-3,-4/first/mean/s{i}"], f"s{i}")


def test_scalar_mix_given_weights_equal_hand_computation(build: Build, reference: dict, sentences_a: list) -> None:
    raw, gamma = [0.5, -1.0, 2.0, 0.0], 0.7
    weights = np.exp(raw) / np.exp(raw).sum()
    embedding = build(layers="-1,-2,-3,-4", use_scalar_mix=True, scalar_mix_weights=raw, scalar_mix_gamma=gamma)
    for i, vectors in enumerate(embedding.embed(sentences_a[:7])):
        concat = reference[f"-1,-2,-3,-4/first/concat/s{i}"]
        layers = [concat[:, k * HIDDEN : (k + 1) * HIDDEN] for k in range(4)]
        expected = gamma * sum(w * layer for w, layer in zip(weights, layers))
        _close(vectors, expected.astype(np.float32), f"s{i}")


def test_layer_combine_sum_is_four_times_the_mean(build: Build, reference: dict, sentences_a: list) -> None:
    embedding = build(layers="-1,-2,-3,-4", subtoken_pooling="mean", layer_combine="sum")
    for i, vectors in enumerate(embedding.embed(sentences_a[:7])):
        _close(vectors, 4 * reference[f"-1,-2,-3,-4/mean/mean/s{i}"], f"s{i}")


def test_layer_combine_overrides_the_flags(build: Build, reference: dict, sentences_a: list) -> None:
    embedding = build(layers="-1,-2,-3,-4", layer_mean=True, use_scalar_mix=True, layer_combine="concat")
    assert embedding.embedding_length == 4 * HIDDEN
    (vectors,) = embedding.embed([sentences_a[0]])
    _close(vectors, reference["-1,-2,-3,-4/first/concat/s0"], "s0")


@pytest.mark.parametrize("pooling", POOLINGS)
def test_zero_width_token_gets_zeros_and_keeps_alignment(pooling: str, build: Build) -> None:
    embedding = build(subtoken_pooling=pooling)
    with_gap, without = embedding.embed(
        [["Hello", "\u200b", "wonderful", "world", "\u200b"], ["Hello", "wonderful", "world"]]
    )
    assert with_gap.shape == (5, embedding.embedding_length)
    assert torch.count_nonzero(with_gap[1]) == 0 and torch.count_nonzero(with_gap[4]) == 0
    torch.testing.assert_close(with_gap[[0, 2, 3]], without, atol=1e-5, rtol=1e-5)
    assert torch.count_nonzero(without, dim=1).min() > 0


def test_empty_and_piece_less_sentences(build: Build) -> None:
    embedding = build()
    empty, gap_only, word = embedding.embed([[], ["\u200b"], ["word"]])
    assert empty.shape == (0, HIDDEN)
    assert gap_only.shape == (1, HIDDEN) and torch.count_nonzero(gap_only) == 0
    assert word.shape == (1, HIDDEN) and torch.count_nonzero(word) > 0
    assert embedding.embed([]) == []


@pytest.mark.parametrize(
    ("kwargs", "length"),
    [
        ({}, HIDDEN),
        ({"subtoken_pooling": "first_last"}, 2 * HIDDEN),
        ({"layers": "-1,-2,-3,-4", "layer_mean": False}, 4 * HIDDEN),
        ({"layers": "-1,-2,-3,-4", "layer_mean": False, "subtoken_pooling": "first_last"}, 8 * HIDDEN),
        ({"layers": "all", "layer_mean": False}, 7 * HIDDEN),
        ({"layers": "all", "use_scalar_mix": True, "subtoken_pooling": "first_last"}, 2 * HIDDEN),
        ({"layers": "0,1", "layer_combine": "sum"}, HIDDEN),
    ],
)
def test_embedding_length(kwargs: dict, length: int, build: Build, sentences_a: list) -> None:
    embedding = build(**kwargs)
    assert embedding.embedding_length == length
    (vectors,) = embedding.embed([sentences_a[0]])
    assert vectors.shape == (len(sentences_a[0]), length)


def test_without_long_sentences_words_past_the_window_are_zero(
    build: Build, reference: dict, tokenization: dict, sentences_a: list
) -> None:
    """Flair's truncation: one window; words inside read as in the strided run's first window."""
    embedding = build(allow_long_sentences=False)
    (vectors,) = embedding.embed([sentences_a[7]])
    expected = reference["-1/first/mean/s7"]
    word_ids = tokenization["s7"]["word_ids"]
    first_position = {}
    for position, word in enumerate(word_ids):
        if word is not None:
            first_position.setdefault(word, position)
    inside = [w for w, p in first_position.items() if p < 383]
    past = [w for w, p in first_position.items() if p >= 511]
    assert inside and past
    _close(vectors[inside], expected[inside], "words in the first window")
    assert torch.count_nonzero(vectors[past]) == 0


def test_scalar_mix_layer_norm_is_batch_invariant(build: Build, sentences_a: list) -> None:
    embedding = build(layers="all", use_scalar_mix=True, scalar_mix_layer_norm=True)
    together = embedding.embed(sentences_a[:4])
    for i, vectors in enumerate(together):
        (alone,) = embedding.embed([sentences_a[i]])
        torch.testing.assert_close(vectors, alone, atol=1e-4, rtol=1e-4)
    assert all(torch.isfinite(v).all() for v in together)


def test_config_and_model_files(build: Build) -> None:
    embedding = build(layers="-1,-2", use_scalar_mix=True, scalar_mix_weights=[1.0, 2.0], scalar_mix_gamma=0.5)
    config = embedding.get_config_dict()
    assert json.loads(json.dumps(config)) == config
    assert config["model"] == "default" and config["layers"] == "-1,-2" and embedding.layer_indexes == [-1, -2]
    assert embedding.layer_combine == "scalar_mix" and config["subtoken_pooling"] == "first"
    assert config["scalar_mix_weights"] == [1.0, 2.0] and config["scalar_mix_gamma"] == 0.5
    assert build().get_config_dict() != config
    names = {Path(path).name for path in embedding.model_files()}
    assert {"model.safetensors", "tokenizer.json", "config.json"} <= names


def test_weights_are_frozen(build: Build) -> None:
    embedding = build(layers="-1,-2", use_scalar_mix=True)
    assert not any(parameter.requires_grad for parameter in embedding.parameters())
    assert not embedding.model.training


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="subtoken_pooling"):
        TransformerWordEmbeddings(subtoken_pooling="max", device="cpu")
    with pytest.raises(ValueError, match="out of range"):
        TransformerWordEmbeddings(layers="7", device="cpu")
    with pytest.raises(ValueError, match="layer_combine"):
        TransformerWordEmbeddings(layer_combine="max", device="cpu")
    with pytest.raises(ValueError, match="precision"):
        TransformerWordEmbeddings(precision="fp8", device="cpu")
    with pytest.raises(ValueError, match="weights"):
        TransformerWordEmbeddings(layers="-1,-2", use_scalar_mix=True, scalar_mix_weights=[1.0], device="cpu")


# ------------------------------------------------------------------ ScalarMix on its own


def test_scalar_mix_module_matches_formula() -> None:
    generator = torch.Generator().manual_seed(0)
    tensors = [torch.randn(2, 5, 8, generator=generator) for _ in range(3)]
    mix = ScalarMix(3, initial_scalar_parameters=[0.1, -0.3, 0.9], gamma=1.5)
    weights = torch.softmax(torch.tensor([0.1, -0.3, 0.9]), dim=0)
    expected = 1.5 * sum(w * t for w, t in zip(weights, tensors))
    torch.testing.assert_close(mix(tensors), expected)
    torch.testing.assert_close(mix(torch.stack(tensors)), expected)
    assert set(mix.state_dict()) == {"gamma", "scalar_parameters.0", "scalar_parameters.1", "scalar_parameters.2"}
    assert not any(p.requires_grad for p in mix.parameters())
    assert all(p.requires_grad for p in ScalarMix(3, trainable=True).parameters())


def test_scalar_mix_layer_norm_per_item_matches_allennlp_for_one_item() -> None:
    generator = torch.Generator().manual_seed(1)
    tensors = [torch.randn(2, 6, 4, generator=generator) * (k + 1) + k for k in range(2)]
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    mix = ScalarMix(2, do_layer_norm=True)
    batched = mix(tensors, mask)
    for item in range(2):
        alone = mix([t[item : item + 1] for t in tensors], mask[item : item + 1])
        torch.testing.assert_close(batched[item : item + 1], alone)
        # AllenNLP's _do_layer_norm over a batch of one.
        m = mask[item : item + 1].unsqueeze(-1).float()
        count = m.sum() * 4
        normed = []
        for t in tensors:
            t = t[item : item + 1]
            mean = (t * m).sum() / count
            variance = (((t * m - mean) * m) ** 2).sum() / count
            normed.append((t - mean) / torch.sqrt(variance + 1e-13))
        torch.testing.assert_close(alone, 0.5 * normed[0] + 0.5 * normed[1])
