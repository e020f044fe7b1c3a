"""SentenceTransformerEmbeddings against sentence-transformers' own ``encode`` on the packaged MiniLM.

``tests/fixtures/frontend/st_setA.npz`` holds ``SentenceTransformer(model).encode(texts)`` for the
10 raw texts of ``textsA.json``, made by sentence-transformers 5.7.0 (transformers 4.57.6, torch
2.13.0 CPU) on the packaged all-MiniLM-L6-v2: Transformer (max_seq_length 256) → Pooling (mean)
→ Normalize (whose ``2_Normalize`` folder the package does not ship); key ``t{i}``, atol 1e-5.
Other checks compare with the installed sentence-transformers' ``encode`` in this process, on
model folders made here from the packaged one (other pooling modes, prompts, a Dense layer).
"""
from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import torch

from actors.stack.registry import resolve_transformer
from actors.stack.sentence_transformer import SentenceTransformerEmbeddings
from actors.stack.st_files import pickled_weight_files, sentence_transformer_files

pytestmark = pytest.mark.usefixtures("torch_one_thread")

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "frontend"
REPO_ROOT = Path(__file__).resolve().parents[2]
ATOL = 1e-5
DIM = 384
LONG_TEXT = "The quick brown fox jumps over the lazy dog near the riverbank, twice. " * 30
# A few texts of the fixture set (the derived-model checks need variety, not all ten).
SOME = [0, 3, 6]
EXTRA_TEXTS = [
    "",
    "  leading and trailing spaces  ",
    "Tiny.",
    LONG_TEXT,
    "Ünïcödé façade — naïve café, 東京 and ☃.",
    "A medium sentence about sentence embeddings, batching and padding tokens in transformers.",
]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return json.loads((FIXTURES / "textsA.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def expected(texts: list[str]) -> np.ndarray:
    with np.load(FIXTURES / "st_setA.npz") as arrays:
        assert sorted(arrays.files) == sorted(f"t{i}" for i in range(len(texts)))
        return np.stack([arrays[f"t{i}"] for i in range(len(texts))])


@pytest.fixture(scope="module")
def packaged() -> Path:
    return Path(resolve_transformer("default").path)


@pytest.fixture(scope="module")
def emb() -> SentenceTransformerEmbeddings:
    return SentenceTransformerEmbeddings(device="cpu")


@pytest.fixture(scope="module")
def reference(packaged: Path) -> Any:
    """The installed sentence-transformers, loading the same folder itself."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(packaged), device="cpu")


def _close(actual: torch.Tensor, expected: np.ndarray, what: str) -> float:
    assert actual.dtype == torch.float32 and actual.device.type == "cpu", what
    assert tuple(actual.shape) == expected.shape, f"{what}: {tuple(actual.shape)} != {expected.shape}"
    np.testing.assert_allclose(actual.numpy(), expected, atol=ATOL, rtol=0, err_msg=what)
    return float(np.abs(actual.numpy() - expected).max()) if expected.size else 0.0


@contextlib.contextmanager
def _forward_calls(module: torch.nn.Module) -> Iterator[list[int]]:
    """Count forward passes of ``module`` (one per batch)."""
    calls: list[int] = []
    handle = module.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        yield calls
    finally:
        handle.remove()


def _model_folder(packaged: Path, target: Path, files: dict[str, Any]) -> Path:
    """A model folder of links to the packaged model's files; ``files`` adds or replaces some (JSON or bytes)."""
    for source in packaged.rglob("*"):
        relative = source.relative_to(packaged).as_posix()
        if source.is_file() and relative not in files:
            link = target / relative
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(source)
    for relative, content in files.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(json.dumps(content, indent=1), encoding="utf-8")
    return target


# ---------------------------------------------------------------------- the reference fixture


def test_fixture_all_texts_in_one_call(
    emb: SentenceTransformerEmbeddings, texts: list[str], expected: np.ndarray
) -> None:
    assert emb.embedding_length == DIM and emb.max_seq_length == 256
    assert [type(module).__name__ for module in emb.model] == ["Transformer", "Pooling", "Normalize"]
    error = _close(emb.embed_texts(texts), expected, "all texts in one call")
    print(f"max abs error, one call: {error:.2e}")


def test_fixture_one_text_per_call(
    emb: SentenceTransformerEmbeddings, texts: list[str], expected: np.ndarray
) -> None:
    actual = torch.cat([emb.embed_texts([text]) for text in texts])
    error = _close(actual, expected, "one text per call")
    print(f"max abs error, one text per call: {error:.2e}")


def test_fixture_under_a_small_budget(texts: list[str], expected: np.ndarray) -> None:
    small = SentenceTransformerEmbeddings(device="cpu", max_batch_tokens=48)
    with _forward_calls(small.model) as calls:
        error = _close(small.embed_texts(texts), expected, "max_batch_tokens=48")
    assert len(calls) >= 5, f"expected many batches, got {len(calls)}"
    print(f"max abs error, {len(calls)} batches: {error:.2e}")


# ---------------------------------------------------------------------- the installed library, in-process


def test_equals_encode_with_truncation(
    emb: SentenceTransformerEmbeddings, reference: Any, texts: list[str]
) -> None:
    assert len(emb.tokenizer.tokenize(LONG_TEXT)) > 256  # the model's window truncates it
    batch = texts + EXTRA_TEXTS
    want = reference.encode(batch)
    _close(emb.embed_texts(batch), want, "mixed batch")
    _close(torch.cat([emb.embed_texts([text]) for text in EXTRA_TEXTS]), want[len(texts) :], "one per call")
    # The same text embedded with and without a long batch-mate, under budgets cutting different batches.
    small = SentenceTransformerEmbeddings(device="cpu", max_batch_tokens=64)
    _close(small.embed_texts(list(reversed(batch))), want[::-1], "max_batch_tokens=64, reversed")
    # Releases whose preprocess cannot skip padding tokenize each batch on its own: same vectors.
    small._unpadded = False
    _close(small.embed_texts(batch), want, "tokenized per batch")


def test_empty_inputs(emb: SentenceTransformerEmbeddings, reference: Any) -> None:
    assert tuple(emb.embed_texts([]).shape) == (0, DIM)
    _close(emb.embed_texts([""]), reference.encode([""]), "an empty string")
    with pytest.raises(TypeError):
        emb.embed_texts("one string")


_LEGACY_POOLING_KEYS = {
    "cls": "cls_token",
    "max": "max_tokens",
    "mean": "mean_tokens",
    "mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "weightedmean": "weightedmean_tokens",
    "lasttoken": "lasttoken",
}


@pytest.mark.parametrize("modes", ["cls", "max", "lasttoken", "weightedmean", "mean_sqrt_len_tokens", "cls,mean"])
def test_declared_pooling_modes(modes: str, packaged: Path, tmp_path: Path, texts: list[str]) -> None:
    """The Pooling mode the model's ``1_Pooling/config.json`` declares (in the old flag format), any batching."""
    from sentence_transformers import SentenceTransformer

    chosen = modes.split(",")
    pooling = {"word_embedding_dimension": DIM}
    pooling.update({f"pooling_mode_{key}": mode in chosen for mode, key in _LEGACY_POOLING_KEYS.items()})
    folder = _model_folder(packaged, tmp_path / "model", {"1_Pooling/config.json": pooling})
    ours = SentenceTransformerEmbeddings(str(folder), device="cpu", max_batch_tokens=64)
    theirs = SentenceTransformer(str(folder), device="cpu")
    assert ours.embedding_length == DIM * len(chosen)
    batch = [texts[i] for i in SOME] + EXTRA_TEXTS
    _close(ours.embed_texts(batch), theirs.encode(batch), f"pooling {modes}")


def test_dense_and_missing_module_folder(packaged: Path, tmp_path: Path, texts: list[str]) -> None:
    """A Dense layer's safetensors weights load; a Normalize folder named but absent loads with defaults."""
    from sentence_transformers import SentenceTransformer

    try:
        from sentence_transformers.base.modules import Dense
    except ImportError:  # sentence-transformers before 5.7
        from sentence_transformers.models import Dense

    torch.manual_seed(0)
    modules = json.loads((packaged / "modules.json").read_text())
    assert not (packaged / modules[-1]["path"]).exists()  # the packaged model's own missing 2_Normalize
    modules = modules[:2] + [
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
        {"idx": 3, "name": "3", "path": "3_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    folder = _model_folder(packaged, tmp_path / "model", {"modules.json": modules})
    (folder / "2_Dense").mkdir()
    Dense(DIM, 16).save(str(folder / "2_Dense"))
    assert (folder / "2_Dense" / "model.safetensors").is_file()

    ours = SentenceTransformerEmbeddings(str(folder), device="cpu")
    theirs = SentenceTransformer(str(folder), device="cpu")
    assert ours.embedding_length == 16
    batch = [texts[i] for i in SOME] + EXTRA_TEXTS
    vectors = ours.embed_texts(batch)
    _close(vectors, theirs.encode(batch), "Dense then Normalize")
    np.testing.assert_allclose(vectors.norm(dim=1).numpy(), 1.0, atol=1e-5)
    listed = {Path(path).relative_to(folder).as_posix() for path in ours.model_files()}
    assert {"2_Dense/config.json", "2_Dense/model.safetensors", "modules.json"} <= listed


def test_pickled_module_weights_are_refused(packaged: Path, tmp_path: Path) -> None:
    modules = json.loads((packaged / "modules.json").read_text())[:2] + [
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
    ]
    dense_config = {"in_features": DIM, "out_features": 4, "bias": True,
                    "activation_function": "torch.nn.modules.activation.Tanh"}
    folder = _model_folder(packaged, tmp_path / "model", {
        "modules.json": modules,
        "2_Dense/config.json": dense_config,
        "2_Dense/pytorch_model.bin": b"not a pickle that anyone should load",
    })
    assert pickled_weight_files(str(folder)) == [str(folder / "2_Dense" / "pytorch_model.bin")]
    with pytest.raises(ValueError, match="safetensors only"):
        SentenceTransformerEmbeddings(str(folder), device="cpu")


def test_pickled_transformer_weights_are_refused(packaged: Path, tmp_path: Path) -> None:
    """Without model.safetensors the Transformer does not fall back to pytorch_model.bin (use_safetensors)."""
    folder = _model_folder(packaged, tmp_path / "model", {"pytorch_model.bin": b"never unpickled"})
    (folder / "model.safetensors").unlink()
    with pytest.raises(OSError, match="model.safetensors"):
        SentenceTransformerEmbeddings(str(folder), device="cpu")


# ---------------------------------------------------------------------- prompts


def test_prompt_equals_encode_with_prompt(reference: Any, texts: list[str], emb: SentenceTransformerEmbeddings) -> None:
    prompted = SentenceTransformerEmbeddings(prompt="query: ", device="cpu", max_batch_tokens=64)
    batch = texts + EXTRA_TEXTS
    vectors = prompted.embed_texts(batch)
    _close(vectors, reference.encode(batch, prompt="query: "), "prompt='query: '")
    assert not torch.allclose(vectors, emb.embed_texts(batch), atol=1e-3)


def test_prompt_excluded_from_pooling(packaged: Path, tmp_path: Path, texts: list[str], reference: Any) -> None:
    """``include_prompt=False``: the prompt's tokens (its length from the tokenizer) are left out of the mean."""
    from sentence_transformers import SentenceTransformer

    prompt = "Represent this sentence for retrieval: "
    pooling = {"word_embedding_dimension": DIM, "pooling_mode_mean_tokens": True, "include_prompt": False}
    folder = _model_folder(packaged, tmp_path / "model", {"1_Pooling/config.json": pooling})
    ours = SentenceTransformerEmbeddings(str(folder), prompt=prompt, device="cpu", max_batch_tokens=64)
    theirs = SentenceTransformer(str(folder), device="cpu")
    assert theirs[1].include_prompt is False
    batch = [texts[i] for i in SOME] + EXTRA_TEXTS
    want = theirs.encode(batch, prompt=prompt)
    _close(ours.embed_texts(batch), want, "include_prompt=False")
    assert not np.allclose(want, reference.encode(batch, prompt=prompt), atol=1e-3)


def test_model_declared_prompts(packaged: Path, tmp_path: Path, texts: list[str]) -> None:
    """e5/bge-style prompts from config_sentence_transformers.json: prompt_name, the default prompt, queries."""
    from sentence_transformers import SentenceTransformer

    config = json.loads((packaged / "config_sentence_transformers.json").read_text())
    config.update(prompts={"query": "query: ", "document": "passage: "}, default_prompt_name="document")
    folder = _model_folder(packaged, tmp_path / "model", {"config_sentence_transformers.json": config})
    theirs = SentenceTransformer(str(folder), device="cpu")
    batch = [texts[i] for i in SOME] + EXTRA_TEXTS

    default = SentenceTransformerEmbeddings(str(folder), device="cpu")
    assert default.prompts["query"] == "query: " and default.text_prompt == "passage: "
    _close(default.embed_texts(batch), theirs.encode(batch), "the default prompt")
    _close(default.embed_queries(batch), theirs.encode_query(batch), "queries")
    by_name = SentenceTransformerEmbeddings(str(folder), prompt_name="query", device="cpu")
    _close(by_name.embed_texts(batch), theirs.encode(batch, prompt_name="query"), "prompt_name='query'")


def test_queries_without_a_query_prompt(emb: SentenceTransformerEmbeddings, reference: Any, texts: list[str]) -> None:
    assert emb.query_prompt is None
    assert torch.equal(emb.embed_queries(texts), emb.embed_texts(texts))
    _close(emb.embed_queries(texts), reference.encode_query(texts), "encode_query")


def test_prompt_arguments_are_checked(emb: SentenceTransformerEmbeddings) -> None:
    with pytest.raises(ValueError, match="give prompt or prompt_name, not both"):
        SentenceTransformerEmbeddings(prompt="query: ", prompt_name="query", device="cpu")
    with pytest.raises(ValueError, match="'document', 'query'"):
        SentenceTransformerEmbeddings(prompt_name="passage", device="cpu")


# ---------------------------------------------------------------------- precision, gradients


def test_bfloat16_autocast_on_cpu(texts: list[str], expected: np.ndarray) -> None:
    low = SentenceTransformerEmbeddings(device="cpu", precision="bfloat16")
    vectors = low.embed_texts(texts[:3])
    assert vectors.dtype == torch.float32
    cosine = torch.nn.functional.cosine_similarity(vectors, torch.from_numpy(expected[:3]))
    assert float(cosine.min()) > 0.99


def test_forward_trains_only_when_fine_tuned(emb: SentenceTransformerEmbeddings, texts: list[str]) -> None:
    frozen = emb(texts[:2])
    assert not frozen.requires_grad and not emb.is_trainable
    tuned = SentenceTransformerEmbeddings(device="cpu", fine_tune=True)
    tuned.train()
    assert tuned.model.training
    out = tuned(texts[:2])
    assert out.requires_grad and tuple(out.shape) == (2, DIM)
    out.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tuned.parameters())
    emb.train()
    assert not emb.model.training  # frozen weights stay in eval mode
    emb.eval()


# ---------------------------------------------------------------------- the files that define the vectors


def test_sentence_transformer_files(packaged: Path) -> None:
    listed = {Path(path).relative_to(packaged).as_posix() for path in sentence_transformer_files(str(packaged))}
    assert {
        "modules.json", "config_sentence_transformers.json", "sentence_bert_config.json", "1_Pooling/config.json",
        "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
        "special_tokens_map.json",
    } == listed
    assert sentence_transformer_files("sentence-transformers/not-a-local-folder") == []


def test_st_files_is_torch_free() -> None:
    code = "import sys, actors.stack.st_files; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)


def test_unset_budget_is_the_cpu_default_and_a_set_one_wins(emb: SentenceTransformerEmbeddings) -> None:
    from actors.stack.batching import CPU_MAX_BATCH_TOKENS, default_max_batch_tokens

    assert emb.max_batch_tokens == CPU_MAX_BATCH_TOKENS           # built on CPU with none set
    assert default_max_batch_tokens("cuda", 32768) == 32768       # a GPU keeps the kind's own
    assert SentenceTransformerEmbeddings(device="cpu", max_batch_tokens=4096).max_batch_tokens == 4096
