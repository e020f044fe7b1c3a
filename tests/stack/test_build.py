"""build_stack from the config's stack section, stacking order, pooling, and the fingerprint."""
from __future__ import annotations

import shutil

import pytest
import torch

from actors.stack import DocumentPoolEmbeddings, StackedEmbeddings, build_stack
from actors.stack.fingerprint import stack_fingerprint
from pipeline.config import parse_config


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture
def word_file(tmp_path):
    path = tmp_path / "vectors.txt"
    path.write_text("3 4\nthe 1 0 0 0\nquick 0 1 0 0\n. 0 0 0 1\n")
    return path


def _config(fixtures_dir, word_file, **extra):
    return parse_config({
        "input": {"path": "in/"}, "output": {"path": "out/"},
        "stack": [
            {"transformer": {"model": "default", "layers": "-1", "subtoken_pooling": "mean"}},
            {"flair": {"model": str(fixtures_dir / "flair" / "flair-tiny-forward.pt")}},
            {"elmo": {"options_file": str(fixtures_dir / "elmo-tiny" / "options.json"),
                      "weight_file": str(fixtures_dir / "elmo-tiny" / "weights.hdf5"), "embedding_mode": "top"}},
            {"word": {"embeddings": str(word_file)}},
        ], **extra})


def test_build_stack_concatenates_in_list_order(fixtures_dir, word_file, sentences_a) -> None:
    config = _config(fixtures_dir, word_file)
    stack = build_stack(config)
    assert isinstance(stack, StackedEmbeddings)
    widths = [layer.embedding_length for layer in stack.embeddings]
    assert widths == [384, 32, 32, 4] and stack.embedding_length == 452
    vectors = stack.embed(sentences_a[:3])
    parts = [layer.embed(sentences_a[:3]) for layer in stack.embeddings]
    for i, sentence in enumerate(sentences_a[:3]):
        assert vectors[i].shape == (len(sentence), 452) and vectors[i].dtype == torch.float32
        assert torch.equal(vectors[i], torch.cat([part[i] for part in parts], dim=-1))
    # The word vectors sit last: "The" → lowercase hit "the" = [1, 0, 0, 0].
    assert vectors[0][0, -4:].tolist() == [1.0, 0.0, 0.0, 0.0]


def test_document_pooling(fixtures_dir, word_file) -> None:
    stack = build_stack(_config(fixtures_dir, word_file))
    sentences = [["The", "quick", "."], ["quick"]]
    tokens = stack.embed(sentences)
    for pooling, reduce in (("mean", lambda t: t.mean(0)), ("max", lambda t: t.max(0).values), ("min", lambda t: t.min(0).values)):
        pooled = DocumentPoolEmbeddings(stack, pooling).embed(sentences)
        for got, token_vectors in zip(pooled, tokens):
            assert got.shape == (452,)
            torch.testing.assert_close(got, reduce(token_vectors))
    with pytest.raises(ValueError, match="cls"):
        DocumentPoolEmbeddings(stack, "cls")


def test_fingerprint_follows_config_and_model_bytes(fixtures_dir, word_file, tmp_path) -> None:
    config = _config(fixtures_dir, word_file)
    first = stack_fingerprint(config.stack_spec(), config.pooling)
    assert first == stack_fingerprint(config.stack_spec(), config.pooling)
    assert first == build_stack(config).fingerprint(config.pooling)
    assert first != stack_fingerprint(config.stack_spec(), "max")

    # The same bytes at another path are the same stack; other bytes are another stack.
    moved = tmp_path / "moved.txt"
    shutil.copy(word_file, moved)
    spec = config.stack_spec()
    spec[3]["word"]["embeddings"] = str(moved)
    assert stack_fingerprint(spec, "mean") == first
    moved.write_text("3 4\nthe 1 0 0 0\nquick 0 1 0 0\n. 0 0 0 2\n")
    assert stack_fingerprint(spec, "mean") != first

    spec = config.stack_spec()
    spec[0]["transformer"]["layers"] = "-2"
    assert stack_fingerprint(spec, "mean") != first
