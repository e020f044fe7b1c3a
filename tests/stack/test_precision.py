"""Mixed precision on CPU: ``auto`` stays exact float32; an explicit ``bfloat16`` really autocasts.

bfloat16 keeps 8 bits of mantissa, so its vectors differ from float32's in the third digit but
point the same way; these tests check both halves of that: the numbers change (autocast ran) and
the directions do not (cosine similarity to the float32 vectors).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from actors.embedder import TextEmbedder
from actors.stack import ELMoEmbeddings, FlairEmbeddings, TransformerWordEmbeddings
from actors.stack.device import autocast_dtype
from pipeline.config import ConfigError, parse_config

pytestmark = pytest.mark.usefixtures("torch_one_thread")

CPU = torch.device("cpu")


def _compare(exact: list[torch.Tensor], low: list[torch.Tensor]) -> tuple[float, float]:
    """(largest absolute difference, smallest per-vector cosine similarity) over all vectors."""
    a, b = torch.cat(exact), torch.cat(low)
    assert b.dtype == torch.float32 and a.shape == b.shape
    cosine = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    return float((a - b).abs().max()), float(cosine.min())


def test_autocast_dtype_per_device_and_precision() -> None:
    assert autocast_dtype(CPU, "auto") is None
    assert autocast_dtype(CPU, "float32") is None
    assert autocast_dtype(CPU, "bfloat16") is torch.bfloat16
    assert autocast_dtype(CPU, "float16") is torch.float16
    assert autocast_dtype(torch.device("cuda"), "float32") is None
    with pytest.raises(ValueError, match="precision must be one of"):
        autocast_dtype(CPU, "int8")


def test_transformer_bfloat16_on_cpu_is_close_but_not_exact(minilm_path: str, sentences_a: list[list[str]]) -> None:
    exact = TransformerWordEmbeddings(minilm_path, layers="-1,-2,-3,-4", device="cpu").embed(sentences_a)
    auto = TransformerWordEmbeddings(minilm_path, layers="-1,-2,-3,-4", device="cpu", precision="auto").embed(sentences_a)
    low = TransformerWordEmbeddings(minilm_path, layers="-1,-2,-3,-4", device="cpu", precision="bfloat16").embed(sentences_a)
    assert all(torch.equal(x, y) for x, y in zip(exact, auto))
    diff, cosine = _compare(exact, low)
    assert diff > 1e-4, "bfloat16 gave float32's numbers: autocast did not run"
    assert cosine > 0.9995, cosine


def test_flair_bfloat16_on_cpu_is_close_but_not_exact(fixtures_dir: Path, sentences_a: list[list[str]]) -> None:
    path = str(fixtures_dir / "flair" / "flair-tiny-forward.pt")
    exact = FlairEmbeddings(path, device="cpu").embed(sentences_a)
    low = FlairEmbeddings(path, device="cpu", precision="bfloat16").embed(sentences_a)
    diff, cosine = _compare(exact, low)
    assert diff > 1e-5
    assert cosine > 0.999, cosine
    # Padded batches (CPU autocast) carry the state across chunks as the packed ones do.
    chunked = FlairEmbeddings(path, device="cpu", precision="bfloat16", chars_per_chunk=16).embed(sentences_a)
    assert _compare(exact, chunked)[1] > 0.999
    with pytest.raises(ValueError, match="precision"):
        FlairEmbeddings(path, device="cpu", precision="fp8")


def test_elmo_bfloat16_on_cpu_is_close_but_not_exact(fixtures_dir: Path, sentences_a: list[list[str]]) -> None:
    folder = fixtures_dir / "elmo-tiny"
    files = {"options_file": str(folder / "options.json"), "weight_file": str(folder / "weights.hdf5")}
    exact = ELMoEmbeddings(**files, device="cpu").embed(sentences_a)
    low = ELMoEmbeddings(**files, device="cpu", precision="bfloat16").embed(sentences_a)
    diff, cosine = _compare(exact, low)
    assert diff > 1e-5
    assert cosine > 0.995, cosine


def test_job_precision_reaches_the_stack(minilm_path: str) -> None:
    config = parse_config({"input": {"path": "in"}, "output": {"path": "out"}}, ["resources.precision=bfloat16"])
    assert config.resources.precision == "bfloat16"
    texts = ["The bank raised its rates.", "A river bank in spring, green and quiet."]
    exact, _ = TextEmbedder(config.specs, config.token_pooling).embed_documents(texts)
    low, _ = TextEmbedder(config.specs, config.token_pooling, precision=config.resources.precision).embed_documents(texts)
    diff, cosine = _compare([torch.from_numpy(exact)], [torch.from_numpy(low)])
    assert diff > 1e-5 and cosine > 0.9999, (diff, cosine)
    with pytest.raises(ConfigError, match="resources.precision"):
        parse_config({"input": {"path": "in"}, "output": {"path": "out"}}, ["resources.precision=int8"])
