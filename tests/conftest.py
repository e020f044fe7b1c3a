"""Shared test set-up: where the reference fixtures live, and the packaged model."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("CORPUS_EMBED_FIXTURES", REPO_ROOT.parent / "shared" / "fixtures"))

# Keep Ray and the hub quiet and offline in every test process.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """``../shared/fixtures`` beside the checkout (or ``$CORPUS_EMBED_FIXTURES``)."""
    if not FIXTURES.is_dir():
        pytest.fail(f"reference fixtures not found at {FIXTURES}; set CORPUS_EMBED_FIXTURES")
    return FIXTURES


@pytest.fixture(scope="session")
def sentences_a(fixtures_dir: Path) -> list[list[str]]:
    import json

    return json.loads((fixtures_dir / "sentences_A.json").read_text())


@pytest.fixture(scope="session")
def minilm_path() -> str:
    from actors.stack.registry import packaged_transformer_path

    return packaged_transformer_path()
