"""Fidelity from raw text through ``corpus-embed run``: flair's sentences and tokens, flair's
TransformerDocumentEmbeddings, and document vectors identical to SentenceTransformer.encode."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest

from pipeline.config import parse_config
from pipeline.run import run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def texts(fixtures_dir: Path) -> list[str]:
    return json.loads((fixtures_dir / "frontend" / "textsA.json").read_text())


def _run(tmp_path: Path, texts: list[str], **sections) -> tuple[dict, "ds.Dataset"]:
    corpus = tmp_path / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    (corpus / "texts.jsonl").write_text("".join(json.dumps({"id": f"t{i}", "text": text}) + "\n"
                                                for i, text in enumerate(texts)))
    data = {"input": {"path": str(corpus), "id_field": "id"}, "output": {"path": str(tmp_path / "out")}, **sections}
    summary = run(parse_config(data), progress=False)
    assert summary.ok, summary.lines()
    table = ds.dataset(str(tmp_path / "out" / "data"), format="parquet").to_table()
    return summary, table


def _vectors_by_id(table) -> dict[str, np.ndarray]:
    vectors = table.column("vector").combine_chunks().flatten().to_numpy().reshape(table.num_rows, -1)
    return dict(zip(table.column("id").to_pylist(), vectors))


def test_default_stack_output_is_sentence_transformers_encode(ray_address, tmp_path, texts, fixtures_dir) -> None:
    summary, table = _run(tmp_path, texts)
    reference = np.load(fixtures_dir / "frontend" / "st_setA.npz")
    got = _vectors_by_id(table)
    errors = [np.abs(got[f"t{i}"] - reference[f"t{i}"]).max() for i in range(len(texts))]
    assert max(errors) <= 1e-5, errors
    print(f"sentence_transformer through corpus-embed run: max |diff| {max(errors):.2e} over {len(texts)} texts")
    norms = np.linalg.norm(np.stack(list(got.values())), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)      # the model's Normalize module ran


def test_transformer_document_through_the_pipeline(ray_address, tmp_path, texts, fixtures_dir) -> None:
    reference = np.load(fixtures_dir / "frontend" / "docemb_setA.npz")
    _, table = _run(tmp_path, texts, stack=[{"transformer_document": {"layers": "-1,-2", "cls_pooling": "cls",
                                                                     "layer_mean": False}}])
    got = _vectors_by_id(table)
    for i in range(len(texts)):
        np.testing.assert_allclose(got[f"t{i}"], reference[f"-1,-2/cls/0/t{i}"], atol=1e-4, rtol=1e-4)


def test_sentence_and_token_granularity_use_flairs_front_end(ray_address, tmp_path, texts, fixtures_dir) -> None:
    frontend = json.loads((fixtures_dir / "frontend" / "frontend_setA.json").read_text())
    _, table = _run(tmp_path / "s", texts, output={"path": str(tmp_path / "s" / "out"), "granularity": "sentence"})
    rows = sorted(table.select(["id", "sentence", "text"]).to_pylist(), key=lambda r: (int(r["id"][1:]), r["sentence"]))
    expected = [(f"t{i}", k, sentence["text"]) for i, item in enumerate(frontend)
                for k, sentence in enumerate(item["sentences"])]
    assert [(r["id"], r["sentence"], r["text"]) for r in rows] == expected

    _, table = _run(tmp_path / "t", texts, output={"path": str(tmp_path / "t" / "out"), "granularity": "token"},
                    stack=[{"transformer": {"layers": "-1"}}])
    rows = sorted(table.select(["id", "sentence", "tokens"]).to_pylist(), key=lambda r: (int(r["id"][1:]), r["sentence"]))
    assert [r["tokens"] for r in rows] == [sentence["tokens"] for item in frontend for sentence in item["sentences"]]


def test_search_embeds_queries_with_the_models_query_prompt(ray_address, tmp_path, texts, minilm_path) -> None:
    """An e5/bge-style model declares a query prompt: documents are embedded without it, queries with it."""
    from sentence_transformers import SentenceTransformer

    from pipeline.index.build import build_index
    from pipeline.index.search import Searcher

    model = tmp_path / "model-with-prompts"
    shutil.copytree(minilm_path, model)
    settings = json.loads((model / "config_sentence_transformers.json").read_text())
    settings["prompts"] = {"query": "query: ", "document": ""}
    (model / "config_sentence_transformers.json").write_text(json.dumps(settings))

    _run(tmp_path, texts, stack=[{"sentence_transformer": {"model": str(model)}}])
    build_index(str(tmp_path / "out"), str(tmp_path / "index"), "flat")
    searcher = Searcher(str(tmp_path / "index"))
    query = "a price that fell in 2023"
    reference = SentenceTransformer(str(model), device="cpu")
    np.testing.assert_allclose(searcher.embed_query(query)[0], reference.encode_query([query])[0], atol=1e-5)
    assert not np.allclose(searcher.embed_query(query)[0], reference.encode([query])[0], atol=1e-3)
    assert searcher.search(query, k=1)[0].id == "t7"
