"""build_stack from the config's stack section, stacking order, pooling, and the fingerprint."""
from __future__ import annotations

import shutil

import pytest
import torch

from actors.stack import DocumentPoolEmbeddings, StackedEmbeddings, build_stack
from actors.stack.fingerprint import stack_fingerprint
from actors.stack.specs import parse_stack
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
    stack = build_stack(config.specs)
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
    stack = build_stack(_config(fixtures_dir, word_file).specs)
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
    first = stack_fingerprint(config.specs, config.token_pooling)
    assert first == stack_fingerprint(config.specs, config.token_pooling)
    assert first == build_stack(config.specs).fingerprint(config.token_pooling)
    assert first != stack_fingerprint(config.specs, "max")

    # The same bytes at another path are the same stack; other bytes are another stack.
    moved = tmp_path / "moved.txt"
    shutil.copy(word_file, moved)
    specs = parse_stack([*config.stack_config()[:3], {"word": {"embeddings": str(moved)}}])
    assert stack_fingerprint(specs, "mean") == first
    moved.write_text("3 4\nthe 1 0 0 0\nquick 0 1 0 0\n. 0 0 0 2\n")
    assert stack_fingerprint(specs, "mean") != first

    changed = config.stack_config()
    changed[0]["transformer"]["layers"] = "-2"
    assert stack_fingerprint(parse_stack(changed), "mean") != first


def test_runtime_options_are_not_identity(fixtures_dir, word_file) -> None:
    """Precision, device and batch budgets change speed, never the fingerprint (one path computes it)."""
    config = _config(fixtures_dir, word_file)
    exact = build_stack(config.specs)
    low = build_stack(config.specs, precision="bfloat16", max_batch_tokens=64)
    assert exact.fingerprint("mean") == low.fingerprint("mean") == stack_fingerprint(config.specs, "mean")


def test_spec_round_trips_through_its_config_dict(fixtures_dir, word_file) -> None:
    """One dict describes a layer: the config entry builds it, the module gives it back, load rebuilds it."""
    config = _config(fixtures_dir, word_file)
    stack = build_stack(config.specs)
    assert stack.get_config_dict() == config.stack_config()
    for layer, spec in zip(stack.embeddings, config.specs):
        assert layer.get_config_dict() == spec.model_dump()
        again = type(layer).load(layer.get_config_dict())
        assert again.spec == spec and again.embedding_length == layer.embedding_length


def test_elmo_portuguese_alias_fingerprints(fixtures_dir, tmp_path, monkeypatch) -> None:
    """ELMo accepts 'portuguese' (flair's name for 'pt'): the fingerprint resolves the same files the module loads."""
    from actors.stack.registry import ELMO_MODELS
    from actors.stack.specs import ElmoSpec

    monkeypatch.setenv("CORPUS_EMBED_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache" / "elmo").mkdir(parents=True)
    options_url, weights_url = ELMO_MODELS["pt"]
    shutil.copy(fixtures_dir / "elmo-tiny" / "options.json", tmp_path / "cache" / "elmo" / options_url.rsplit("/", 1)[-1])
    shutil.copy(fixtures_dir / "elmo-tiny" / "weights.hdf5", tmp_path / "cache" / "elmo" / weights_url.rsplit("/", 1)[-1])
    portuguese, pt = ElmoSpec(model="portuguese"), ElmoSpec(model="pt")
    assert portuguese.files() == pt.files()
    assert stack_fingerprint([portuguese]) == stack_fingerprint([pt])
    assert [p for p in portuguese.build().model_files()] == portuguese.files()


def test_replacing_a_gensim_companion_changes_the_fingerprint(tmp_path) -> None:
    """A gensim KeyedVectors file keeps its matrix in <file>.vectors.npy: those bytes are identity too."""
    import numpy as np

    from actors.stack.specs import WordSpec

    main = tmp_path / "vectors.kv"
    main.write_bytes(b"\x80\x04pickled table stand-in")
    np.save(f"{main}.vectors.npy", np.eye(3, dtype=np.float32))
    spec = WordSpec(embeddings=str(main))
    assert spec.files() == [str(main), f"{main}.vectors.npy"]
    before = stack_fingerprint([spec])
    np.save(f"{main}.vectors.npy", 2 * np.eye(3, dtype=np.float32))
    assert stack_fingerprint([spec]) != before


def test_document_pool_describes_itself(fixtures_dir, word_file) -> None:
    config = _config(fixtures_dir, word_file)
    pooled = DocumentPoolEmbeddings(build_stack(config.specs), "max")
    assert pooled.get_config_dict() == {"pooling": "max", "stack": config.stack_config()}
