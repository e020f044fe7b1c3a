"""corpus-embed run on a local Ray with the packaged model: rows, ids, dims and values."""
from __future__ import annotations

import duckdb
import numpy as np
import polars as pl
import pyarrow.dataset as ds
import pytest

from actors.embedder import TextEmbedder
from actors.text import split_sentences
from pipeline.config import parse_config
from pipeline.run import run
from pipeline.status import output_status
from tests.conftest import DEMO_CORPUS, demo_documents

pytestmark = pytest.mark.slow


TRANSFORMER = [{"transformer": {"layers": "-1", "subtoken_pooling": "mean"}}]


def _config(output, **overrides):
    data = {"input": {"path": str(DEMO_CORPUS), "id_field": "id"}, "output": {"path": str(output)},
            "resources": {"batch_rows": 64}}
    return parse_config(data, [f"{key}={value}" for key, value in overrides.items()])


def test_document_run_matches_in_process_stack(ray_address, tmp_path) -> None:
    docs = demo_documents()
    output = tmp_path / "out"
    config = _config(output)
    summary = run(config, progress=False)
    assert summary.ok, summary.lines()
    assert (summary.units_done, summary.rows_in, summary.rows_out, summary.rows_rejected) == (4, len(docs), len(docs), 0)

    table = ds.dataset(str(output), format="parquet").to_table()
    ids = table.column("id").to_pylist()
    assert sorted(ids) == sorted(doc["id"] for doc in docs) and len(ids) == len(set(ids)) == 320
    assert str(table.schema.field("vector").type) == "fixed_size_list<element: float>[384]"
    assert table.schema.metadata[b"corpus_embed.stack_fingerprint"].decode() == summary.stack_fingerprint
    assert duckdb.sql(f"select count(*), count(distinct id) from read_parquet('{output}/data/**/*.parquet')").fetchall() == [(320, 320)]
    assert pl.read_parquet(f"{output}/data/**/*.parquet").height == 320

    embedder = TextEmbedder(config.specs, config.token_pooling)
    expected, counts = embedder.embed_documents([doc["text"] for doc in docs])
    got = table.column("vector").combine_chunks().flatten().to_numpy().reshape(-1, 384)
    order = {doc_id: i for i, doc_id in enumerate(ids)}
    got = got[[order[doc["id"]] for doc in docs]]
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
    assert embedder.fingerprint() == summary.stack_fingerprint
    assert sum(counts) == summary.tokens

    again = run(config, progress=False)
    assert (again.units_skipped, again.units_done, again.rows_in) == (4, 0, 0)
    assert "nothing to do" in "\n".join(again.lines())
    status = output_status(str(output))
    assert (status["units_done"], status["units_pending"], status["rows_out"]) == (4, 0, 320)
    assert [r["units_done"] for r in status["runs"]] == [4, 0]


def test_sentence_granularity_rows(ray_address, tmp_path) -> None:
    docs = [doc for doc in demo_documents() if doc["id"].startswith("devil:s")][:40]
    shard = tmp_path / "in" / "s.jsonl"
    shard.parent.mkdir()
    shard.write_text("".join(__import__("json").dumps(doc) + "\n" for doc in docs))
    config = parse_config({"input": {"path": str(shard), "id_field": "id"},
                           "output": {"path": str(tmp_path / "out"), "granularity": "sentence", "dtype": "float16"},
                           "stack": TRANSFORMER})
    summary = run(config, progress=False)
    assert summary.ok, summary.lines()
    table = ds.dataset(str(tmp_path / "out"), format="parquet").to_table().sort_by([("id", "ascending"), ("sentence", "ascending")])
    assert str(table.schema.field("vector").type) == "fixed_size_list<element: halffloat>[384]"
    expected_rows = [(doc["id"], i, s) for doc in sorted(docs, key=lambda d: d["id"]) for i, s in enumerate(split_sentences(doc["text"]))]
    got_rows = list(zip(table.column("id").to_pylist(), table.column("sentence").to_pylist(), table.column("text").to_pylist()))
    assert got_rows == expected_rows
    embedder = TextEmbedder(config.specs, config.token_pooling)
    first = embedder.embed_sentences([sorted(docs, key=lambda d: d["id"])[0]["text"]])[0]
    got = table.column("vector").combine_chunks().flatten().to_numpy().reshape(-1, 384)[: len(first.sentences)]
    np.testing.assert_allclose(got.astype(np.float32), np.stack(first.vectors), atol=2e-3)


def test_token_granularity_rows(ray_address, tmp_path) -> None:
    docs = demo_documents()[:12]
    shard = tmp_path / "in" / "t.jsonl"
    shard.parent.mkdir()
    shard.write_text("".join(__import__("json").dumps(doc) + "\n" for doc in docs))
    config = parse_config({"input": {"path": str(shard), "id_field": "id"},
                           "output": {"path": str(tmp_path / "out"), "granularity": "token"},
                           "stack": [{"transformer": {"layers": "-1,-2", "layer_mean": False, "subtoken_pooling": "first"}}]})
    summary = run(config, progress=False)
    assert summary.ok, summary.lines()
    table = ds.dataset(str(tmp_path / "out"), format="parquet").to_table()
    assert str(table.schema.field("vectors").type) == "list<element: fixed_size_list<element: float>[768]>"
    embedder = TextEmbedder(config.specs, config.token_pooling)
    expected = {doc["id"]: embedder.embed_sentences([doc["text"]], keep_tokens=True)[0] for doc in docs}
    assert table.num_rows == sum(len(result.sentences) for result in expected.values())
    for row in table.to_pylist():
        result = expected[row["id"]]
        assert row["tokens"] == result.tokens[row["sentence"]]
        np.testing.assert_allclose(np.array(row["vectors"], dtype=np.float32), result.vectors[row["sentence"]], atol=1e-4, rtol=1e-4)


def test_embed_command_prints_shapes(capsys) -> None:
    from pipeline.cli import main

    text = "The bank vault was robbed. The river bank flooded."
    assert main(["embed", text, "--head", "3", "--set", "stack=[{transformer: {layers: '-1'}}]"]) == 0
    out = capsys.readouterr().out
    assert "token dim 384" in out and "sentence: 'The bank vault was robbed.' → 6 tokens × 384" in out
    assert "document vector (mean): shape (384,)" in out
    assert main(["embed", text, "--head", "3"]) == 0      # the default: sentence-transformers' encode
    out = capsys.readouterr().out
    assert "sentence_transformer, dim 384" in out and "document vector: head" in out
