"""The embeddings as ``torch.nn.Module``s inside users' models.

Frozen by default (no gradient reaches pretrained weights, whose submodules stay in eval mode),
``fine_tune=True`` trains them, a trainable scalar mix trains with the user's head, the padded
``forward`` output equals ``embed``'s, ``layer_combine`` settings agree with each other,
``state_dict`` round trips (without writing into a shared encoder), ``embed_cls`` is the
encoder's ``[CLS]`` state, and ``.to()`` moves what runs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from actors.stack.base import TokenEmbeddings, pad_vectors
from actors.stack.elmo import ELMoEmbeddings
from actors.stack.flair import FlairEmbeddings
from actors.stack.pooling import DocumentPoolEmbeddings
from actors.stack.stacked import StackedEmbeddings
from actors.stack.transformer import TransformerWordEmbeddings
from actors.stack.word import WordEmbeddings

SENTENCES = [
    ["The", "bank", "raised", "its", "rates", "."],
    ["Rivers", "flood", "."],
    [],
    ["unbelievably", "long", "words", "split", "into", "pieces"],
]
HIDDEN = 384


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def flair_path(fixtures_dir: Path) -> str:
    return str(fixtures_dir / "flair" / "flair-tiny-forward.pt")


@pytest.fixture(scope="module")
def elmo_dir(fixtures_dir: Path) -> str:
    return str(fixtures_dir / "elmo-tiny")


@pytest.fixture(scope="module")
def word_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    rng = np.random.default_rng(3)
    words = ["the", "bank", "raised", "its", "rates", ".", "rivers", "flood", "long", "words"]
    lines = [f"{len(words)} 5"] + [w + " " + " ".join(f"{v:.6f}" for v in rng.standard_normal(5)) for w in words]
    path = tmp_path_factory.mktemp("word") / "vectors.vec"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def transformer() -> TransformerWordEmbeddings:
    return TransformerWordEmbeddings("default", device="cpu")


@pytest.fixture(scope="module")
def frozen_stack(transformer, flair_path, elmo_dir, word_path) -> StackedEmbeddings:
    return StackedEmbeddings(
        [
            transformer,
            FlairEmbeddings(flair_path, device="cpu"),
            ELMoEmbeddings(elmo_dir, embedding_mode="top", device="cpu"),
            WordEmbeddings(word_path, device="cpu"),
        ]
    )


def _train_step_loss(embeddings: TokenEmbeddings, sentences=SENTENCES) -> tuple[torch.Tensor, nn.Module]:
    """A head over the padded output, as a user's model would put it; returns the loss and the head."""
    torch.manual_seed(0)
    head = nn.Linear(embeddings.embedding_length, 2)
    padded, mask = embeddings(sentences)
    pooled = (padded * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
    loss = nn.functional.cross_entropy(head(pooled), torch.tensor([0, 1, 0, 1][: len(sentences)]))
    return loss, head


def _nonzero_grad(parameter: nn.Parameter) -> bool:
    return parameter.grad is not None and bool(torch.count_nonzero(parameter.grad))


# ------------------------------------------------------------------ modules, frozen by default


def test_every_embedding_is_a_module_with_visible_parameters(frozen_stack: StackedEmbeddings) -> None:
    assert isinstance(frozen_stack, nn.Module)
    for member in frozen_stack.embeddings:
        assert isinstance(member, nn.Module) and member.state_dict()
        assert sum(p.numel() for p in member.parameters()) > 0
    names = set(frozen_stack.state_dict())
    assert any(name.startswith("embeddings.0.model.") for name in names)
    assert {"embeddings.1.lm.encoder.weight", "embeddings.3.embedding.weight"} <= names
    assert any(name.startswith("embeddings.2.bilm.") for name in names)
    optimizer = torch.optim.SGD(frozen_stack.parameters(), lr=0.1)
    assert sum(len(group["params"]) for group in optimizer.param_groups) == len(list(frozen_stack.parameters()))


def test_frozen_by_default_no_gradient_reaches_pretrained_weights(frozen_stack: StackedEmbeddings) -> None:
    frozen_stack.train()
    try:
        assert not any(p.requires_grad for p in frozen_stack.parameters())
        assert not frozen_stack.is_trainable
        # Frozen pretrained submodules stay in eval mode (no dropout noise in frozen features).
        assert not frozen_stack.embeddings[0].model.training
        assert not frozen_stack.embeddings[1].lm.training and not frozen_stack.embeddings[2].bilm.training
        loss, head = _train_step_loss(frozen_stack)
        loss.backward()
        assert _nonzero_grad(head.weight)
        assert all(p.grad is None for p in frozen_stack.parameters())
    finally:
        frozen_stack.eval()


def test_embed_is_plain_float32_cpu_without_grad_and_usable_in_a_graph(frozen_stack: StackedEmbeddings) -> None:
    vectors = frozen_stack.embed(SENTENCES)
    for vector, sentence in zip(vectors, SENTENCES):
        assert vector.dtype == torch.float32 and vector.device.type == "cpu" and not vector.requires_grad
        assert vector.shape == (len(sentence), frozen_stack.embedding_length)
    # Outside inference mode the tensors are ordinary ones: a user's head may train on them.
    head = nn.Linear(frozen_stack.embedding_length, 1)
    head(vectors[0]).sum().backward()
    assert head.weight.grad is not None
    with torch.inference_mode():
        assert frozen_stack.embed(SENTENCES[:1])[0].is_inference()


# ------------------------------------------------------------------ forward: padded output and mask


def test_padded_output_equals_embed(frozen_stack: StackedEmbeddings) -> None:
    expected = frozen_stack.embed(SENTENCES)
    padded, mask = frozen_stack(SENTENCES)
    longest = max(len(sentence) for sentence in SENTENCES)
    assert padded.shape == (len(SENTENCES), longest, frozen_stack.embedding_length)
    assert mask.dtype == torch.bool and mask.shape == (len(SENTENCES), longest)
    assert mask.sum(1).tolist() == [len(sentence) for sentence in SENTENCES]
    for i, vectors in enumerate(expected):
        n = vectors.shape[0]
        torch.testing.assert_close(padded[i, :n], vectors, atol=1e-6, rtol=0)
        assert torch.count_nonzero(padded[i, n:]) == 0
    for member in frozen_stack.embeddings:
        member_padded, member_mask = member(SENTENCES)
        assert torch.equal(member_mask, mask)
        for i, vectors in enumerate(member.embed(SENTENCES)):
            torch.testing.assert_close(member_padded[i, : vectors.shape[0]], vectors, atol=1e-6, rtol=0)


def test_padded_output_of_nothing_and_of_empty_sentences(transformer: TransformerWordEmbeddings) -> None:
    padded, mask = transformer([])
    assert padded.shape == (0, 0, HIDDEN) and mask.shape == (0, 0)
    padded, mask = transformer([[], []])
    assert padded.shape == (2, 0, HIDDEN) and mask.shape == (2, 0)
    padded, mask = pad_vectors([torch.ones(2, 3), torch.zeros(0, 3)], 3)
    assert mask.tolist() == [[True, True], [False, False]] and padded[1].abs().sum() == 0


# ------------------------------------------------------------------ fine-tuning


def test_fine_tuned_transformer_gets_gradients_and_leaves_the_shared_model_alone(
    transformer: TransformerWordEmbeddings,
) -> None:
    before = transformer.embed(SENTENCES[:2])
    tuned = TransformerWordEmbeddings("default", layers="-1,-2", device="cpu", fine_tune=True)
    assert tuned.model is not transformer.model
    assert all(p.requires_grad for p in tuned.model.parameters())
    tuned.train()
    assert tuned.model.training
    tuned.eval()  # deterministic for the comparisons below
    loss, head = _train_step_loss(tuned)
    loss.backward()
    named = dict(tuned.named_parameters())
    assert _nonzero_grad(named["model.encoder.layer.5.attention.self.query.weight"])
    assert _nonzero_grad(named["model.embeddings.word_embeddings.weight"])
    assert all(p.grad is None for p in transformer.parameters())

    torch.optim.SGD(tuned.parameters(), lr=1.0).step()
    for old, new in zip(before, transformer.embed(SENTENCES[:2])):
        torch.testing.assert_close(new, old, atol=0, rtol=0)
    shared_again = TransformerWordEmbeddings("default", layers="-1,-2", device="cpu")
    assert shared_again.model is transformer.model
    changed = tuned.embed(SENTENCES[:2])
    assert not torch.allclose(changed[0], shared_again.embed(SENTENCES[:1])[0], atol=1e-3)


def test_fine_tuned_flair_lm_gets_gradients(flair_path: str) -> None:
    frozen = FlairEmbeddings(flair_path, device="cpu")
    tuned = FlairEmbeddings(flair_path, device="cpu", fine_tune=True)
    tuned.train()
    assert tuned.lm.training
    loss, _ = _train_step_loss(tuned)
    loss.backward()
    assert _nonzero_grad(tuned.lm.encoder.weight)
    assert _nonzero_grad(tuned.lm.rnn.weight_hh_l0) and _nonzero_grad(tuned.lm.rnn.weight_ih_l0)
    # Chunking carries the graph across chunks: same gradients with tiny chunks.
    chunked = FlairEmbeddings(flair_path, device="cpu", fine_tune=True, chars_per_chunk=7)
    loss, _ = _train_step_loss(chunked)
    loss.backward()
    torch.testing.assert_close(chunked.lm.rnn.weight_hh_l0.grad, tuned.lm.rnn.weight_hh_l0.grad, atol=1e-6, rtol=1e-5)
    loss, _ = _train_step_loss(frozen)
    loss.backward()
    assert all(p.grad is None for p in frozen.parameters())


def test_fine_tuned_elmo_gets_gradients(elmo_dir: str) -> None:
    tuned = ELMoEmbeddings(elmo_dir, embedding_mode="all", device="cpu", fine_tune=True)
    loss, _ = _train_step_loss(tuned)
    loss.backward()
    bilm = tuned.bilm
    assert _nonzero_grad(bilm.char_encoder.char_embedding.weight)
    assert _nonzero_grad(bilm.char_encoder.convs[0].weight) and _nonzero_grad(bilm.char_encoder.projection.weight)
    for cells in (bilm.forward_layers, bilm.backward_layers):
        for cell in cells:
            assert _nonzero_grad(cell.input_linearity.weight) and _nonzero_grad(cell.state_linearity.weight)


def test_fine_tuned_word_vectors_train_known_rows_only(word_path: str) -> None:
    tuned = WordEmbeddings(word_path, device="cpu", fine_tune=True)
    sentences = [["the", "bank", "zzz-unknown"], ["rivers"]]
    padded, _ = tuned(sentences)
    padded.sum().backward()
    grad = tuned.embedding.weight.grad
    assert torch.count_nonzero(grad[tuned.vocab["bank"]]) > 0
    assert torch.count_nonzero(grad[tuned.vocab["flood"]]) == 0
    assert torch.count_nonzero(grad[-1]) == 0  # the unknown row stays zero
    assert not WordEmbeddings(word_path, device="cpu").embedding.weight.requires_grad


def test_trainable_scalar_mix_trains_with_the_head_and_the_encoder_stays_frozen() -> None:
    for settings in (
        {"use_scalar_mix": True},
        {"layer_combine": "scalar_mix", "scalar_mix_layer_norm": True},
    ):
        mixed = TransformerWordEmbeddings(
            "default", layers="-1,-2,-3,-4", scalar_mix_trainable=True, device="cpu", **settings
        )
        trainable = [name for name, p in mixed.named_parameters() if p.requires_grad]
        assert sorted(trainable) == ["scalar_mix.gamma"] + [f"scalar_mix.scalar_parameters.{k}" for k in range(4)]
        loss, _ = _train_step_loss(mixed)
        loss.backward()
        assert all(_nonzero_grad(p) for p in mixed.scalar_mix.parameters()), settings
        assert all(p.grad is None for p in mixed.model.parameters())
        before = mixed.get_config_dict()["scalar_mix_weights"]
        torch.optim.SGD(mixed.parameters(), lr=1.0).step()
        assert mixed.get_config_dict()["scalar_mix_weights"] != before
    assert not any(p.requires_grad for p in TransformerWordEmbeddings(layers="-1,-2", use_scalar_mix=True).parameters())


def test_fine_tuned_forward_equals_embed_in_eval_mode_and_embed_ignores_train_mode(flair_path: str) -> None:
    tuned = TransformerWordEmbeddings("default", device="cpu", fine_tune=True, subtoken_pooling="mean")
    padded, _ = tuned(SENTENCES)
    assert padded.requires_grad
    for i, vectors in enumerate(tuned.embed(SENTENCES)):
        torch.testing.assert_close(padded[i, : vectors.shape[0]].detach(), vectors, atol=1e-5, rtol=1e-5)
    tuned.train()
    with torch.no_grad():
        noisy, _ = tuned(SENTENCES[:1])  # dropout is on: forward follows the training mode
    quiet = tuned.embed(SENTENCES[:1])[0]  # embed always runs in eval mode, then restores the mode
    assert tuned.training and tuned.model.training
    torch.testing.assert_close(quiet, padded[0, :6].detach(), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(noisy[0], quiet, atol=1e-4)
    stack = StackedEmbeddings([tuned, FlairEmbeddings(flair_path, device="cpu")])
    padded, _ = stack(SENTENCES[:2])
    assert padded.requires_grad and stack.is_trainable
    with torch.no_grad():
        assert not stack(SENTENCES[:2])[0].requires_grad


# ------------------------------------------------------------------ layer_combine


def test_layer_combine_equivalences() -> None:
    def build(**kwargs) -> TransformerWordEmbeddings:
        return TransformerWordEmbeddings("default", layers="-1,-2,-3,-4", device="cpu", **kwargs)

    sentences = SENTENCES[:2]
    mean = build(layer_combine="mean").embed(sentences)
    checks = {
        "sum": (build(layer_combine="sum"), lambda v: 4 * v),
        "layer_mean": (build(layer_mean=True), lambda v: v),
        "uniform scalar_mix": (build(layer_combine="scalar_mix"), lambda v: v),
    }
    for name, (embedding, expected) in checks.items():
        assert embedding.embedding_length == HIDDEN, name
        for got, base in zip(embedding.embed(sentences), mean):
            torch.testing.assert_close(got, expected(base), atol=1e-4, rtol=1e-4, msg=name)
    concat = build(layer_combine="concat")
    assert concat.embedding_length == 4 * HIDDEN and concat.hidden_size == 4 * HIDDEN
    flags = build(layer_mean=False)
    assert flags.layer_combine == "concat"
    for got, via_flags, base in zip(concat.embed(sentences), flags.embed(sentences), mean):
        torch.testing.assert_close(got, via_flags, atol=0, rtol=0)
        torch.testing.assert_close(got.view(-1, 4, HIDDEN).mean(1), base, atol=1e-5, rtol=1e-5)
    top = TransformerWordEmbeddings("default", layers="-1", device="cpu").embed(sentences)
    for got, last in zip(concat.embed(sentences), top):
        torch.testing.assert_close(got[:, :HIDDEN], last, atol=0, rtol=0)


# ------------------------------------------------------------------ state_dict and devices


def test_state_dict_round_trip_without_touching_the_shared_encoder(transformer: TransformerWordEmbeddings) -> None:
    reference = transformer.embed(SENTENCES[:2])
    tuned = TransformerWordEmbeddings("default", device="cpu", fine_tune=True)
    loss, _ = _train_step_loss(tuned)
    loss.backward()
    torch.optim.SGD(tuned.parameters(), lr=1.0).step()
    state = tuned.state_dict()

    restored = TransformerWordEmbeddings("default", device="cpu")
    assert restored.model is transformer.model  # shared until something different is loaded
    restored.load_state_dict(state)
    assert restored.model is not transformer.model
    for got, want in zip(restored.embed(SENTENCES[:2]), tuned.embed(SENTENCES[:2])):
        torch.testing.assert_close(got, want, atol=0, rtol=0)
    for got, want in zip(transformer.embed(SENTENCES[:2]), reference):
        torch.testing.assert_close(got, want, atol=0, rtol=0)
    # Loading the unchanged pretrained weights keeps sharing.
    same = TransformerWordEmbeddings("default", device="cpu")
    same.load_state_dict(transformer.state_dict())
    assert same.model is transformer.model


def test_state_dict_round_trip_for_every_kind(flair_path: str, elmo_dir: str, word_path: str) -> None:
    def kinds(fine_tune: bool) -> StackedEmbeddings:
        return StackedEmbeddings(
            [
                TransformerWordEmbeddings("default", layers="-1,-2", use_scalar_mix=True, device="cpu",
                                          scalar_mix_trainable=True),
                FlairEmbeddings(flair_path, device="cpu", fine_tune=fine_tune),
                ELMoEmbeddings(elmo_dir, device="cpu", fine_tune=fine_tune),
                WordEmbeddings(word_path, device="cpu", fine_tune=fine_tune),
            ]
        )

    trained = kinds(fine_tune=True)
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in trained.parameters():
            if parameter.requires_grad:
                parameter.add_(0.05 * torch.randn_like(parameter))
    fresh = kinds(fine_tune=False)
    before = fresh.embed(SENTENCES)
    fresh.load_state_dict(trained.state_dict())
    for got, want, old in zip(fresh.embed(SENTENCES), trained.embed(SENTENCES), before):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
        if old.numel():
            assert not torch.allclose(got, old, atol=1e-4)


def test_to_moves_what_runs(transformer: TransformerWordEmbeddings, flair_path: str, elmo_dir: str) -> None:
    stack = StackedEmbeddings(
        [transformer, FlairEmbeddings(flair_path, device="cpu"), ELMoEmbeddings(elmo_dir, device="cpu")]
    )
    expected = stack.embed(SENTENCES[:2])
    assert stack.to("cpu") is stack and stack.to(torch.device("cpu")) is stack
    assert stack.device.type == "cpu" and transformer.device.type == "cpu"
    assert all(p.device.type == "cpu" for p in stack.parameters())
    padded, _ = stack(SENTENCES[:2])
    assert padded.device.type == "cpu"
    for got, want in zip(stack.embed(SENTENCES[:2]), expected):
        torch.testing.assert_close(got, want, atol=0, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_to_cuda_moves_the_model_used_at_embed_time(flair_path: str) -> None:
    tuned = TransformerWordEmbeddings("default", device="cpu", fine_tune=True)
    flair = FlairEmbeddings(flair_path, device="cpu")
    expected = tuned.embed(SENTENCES[:2]), flair.embed(SENTENCES[:2])
    for embedding, want in zip((tuned, flair), expected):
        embedding.to("cuda")
        assert embedding.device.type == "cuda"
        padded, mask = embedding(SENTENCES[:2])
        assert padded.device.type == "cuda" and mask.device.type == "cuda"
        for got, ref in zip(embedding.embed(SENTENCES[:2]), want):
            assert got.device.type == "cpu"
            torch.testing.assert_close(got, ref, atol=5e-2, rtol=5e-2)  # bf16 autocast on GPU


# ------------------------------------------------------------------ [CLS] vectors and pooling


def test_embed_cls_is_the_encoders_state_at_cls(transformer: TransformerWordEmbeddings, minilm_path: str) -> None:
    sentence = ["The", "bank", "raised", "its", "rates", "."]
    (cls,) = transformer.embed_cls([sentence])
    assert transformer.hidden_size == HIDDEN and cls.shape == (HIDDEN,) and cls.dtype == torch.float32
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    model = AutoModel.from_pretrained(minilm_path, use_safetensors=True).eval()
    encoded = tokenizer(sentence, is_split_into_words=True, return_tensors="pt")
    with torch.no_grad():
        expected = model(**encoded, output_hidden_states=True).hidden_states[-1][0, 0]
    torch.testing.assert_close(cls, expected, atol=1e-4, rtol=1e-4)
    # Batched with others (and an empty sentence, which gets zeros) it is the same vector.
    together = transformer.embed_cls([SENTENCES[3], [], sentence])
    torch.testing.assert_close(together[2], cls, atol=1e-5, rtol=1e-5)
    assert torch.count_nonzero(together[1]) == 0


def test_cls_width_is_the_combined_layers_without_first_last_doubling(sentences_a: list) -> None:
    embedding = TransformerWordEmbeddings(
        "default", layers="-1,-2", layer_mean=False, subtoken_pooling="first_last", device="cpu"
    )
    assert embedding.embedding_length == 4 * HIDDEN and embedding.hidden_size == 2 * HIDDEN
    long_sentence = sentences_a[7]  # several windows: the first window's [CLS]
    vectors = embedding.embed_cls([long_sentence, SENTENCES[0]])
    assert [tuple(v.shape) for v in vectors] == [(2 * HIDDEN,), (2 * HIDDEN,)]
    top = TransformerWordEmbeddings("default", device="cpu").embed_cls([long_sentence])[0]
    torch.testing.assert_close(vectors[0][:HIDDEN], top, atol=1e-5, rtol=1e-5)


def test_document_pooling_cls_and_mean(transformer: TransformerWordEmbeddings) -> None:
    stack = StackedEmbeddings([transformer])
    cls_pool = DocumentPoolEmbeddings(stack, pooling="cls")
    assert cls_pool.embedding_length == HIDDEN
    vectors = cls_pool.embed(SENTENCES)
    for got, want in zip(vectors, transformer.embed_cls(SENTENCES)):
        torch.testing.assert_close(got, want, atol=0, rtol=0)
    torch.testing.assert_close(cls_pool(SENTENCES), torch.stack(vectors), atol=1e-5, rtol=1e-5)
    for pooling in ("mean", "max", "min"):
        pool = DocumentPoolEmbeddings(stack, pooling=pooling)
        torch.testing.assert_close(pool(SENTENCES), torch.stack(pool.embed(SENTENCES)), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="cls"):
        DocumentPoolEmbeddings(StackedEmbeddings([transformer, transformer]), pooling="cls")
