"""The runnable examples: each runs end to end on its own small data, well within a minute."""
from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BUDGET_S = 60


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_classifier_on_a_frozen_stack_learns(fixtures_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    classifier = load("classifier")
    assert Path(classifier.DEFAULT_FLAIR) == fixtures_dir / "flair" / "flair-tiny-forward.pt"
    started = time.perf_counter()
    metrics = classifier.main([])
    elapsed = time.perf_counter() - started
    losses = metrics["losses"]
    assert len(losses) == 8 and losses[-1] < 0.5 * losses[0]
    assert all(later <= earlier for earlier, later in zip(losses, losses[1:]))
    assert metrics["accuracy"] > metrics["majority_baseline"] + 0.2
    assert metrics["n_test"] > 0 and metrics["n_train"] > metrics["n_test"]
    # Only the head trains: a linear layer over [MiniLM 384 | Flair LM 32], two classes.
    assert metrics["trainable_parameters"] == (384 + 32) * 2 + 2
    printed = capsys.readouterr().out
    assert "epoch 1: loss" in printed and "majority baseline" in printed
    assert elapsed < BUDGET_S, f"took {elapsed:.1f}s"


def test_classifier_with_a_bilstm_head(fixtures_dir: Path) -> None:
    classifier = load("classifier")
    metrics = classifier.main(["--head", "bilstm", "--epochs", "3", "--per-class", "30"])
    assert metrics["losses"][-1] < metrics["losses"][0]
    assert metrics["accuracy"] > metrics["majority_baseline"]


def test_bert_recipes(capsys: pytest.CaptureFixture[str]) -> None:
    recipes = load("bert_recipes")
    started = time.perf_counter()
    results = recipes.main([])
    elapsed = time.perf_counter() - started
    n = len(results["tokens"])
    assert results["bank_positions"] == [5, 9, 18]
    assert results["sum_shape"] == (n, 384)
    assert results["concat_shape"] == (n, 4 * 384) == (n, 1536)
    assert results["sentence_shape"] == (384,)
    for combine in ("sum", "concat"):
        same, different = results[f"{combine}_same_sense"], results[f"{combine}_different_sense"]
        assert -1 <= different < same <= 1, combine
    assert results["similarity_same_sense"] > results["similarity_different_sense"]
    assert "same sense" in capsys.readouterr().out
    assert elapsed < BUDGET_S, f"took {elapsed:.1f}s"
