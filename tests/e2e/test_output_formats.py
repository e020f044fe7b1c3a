"""The output as others open it: DuckDB, polars and pandas, running the README's queries as written.

Two small real runs on a local Ray, each with a rejected row: the default stack (then a refresh
that prunes a deleted shard), and a transformer stack with ``output.keep_text``. The README's
"Output" section is read here and its queries run with only the output path substituted, so the
documentation cannot drift from what the files hold.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from pipeline.config import parse_config
from pipeline.run import RunSummary, run
from tests.conftest import demo_documents

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[2] / "README.md"
README_OUTPUT = "out/demo"          # the output path the README's queries name
QUERY_ID = "devil:liar"             # the document the README's nearest-neighbour queries start from
# The README's neighbours of devil:liar on the whole demo corpus, and other entries to fill 20 docs.
NEIGHBOURS = ["devil:liar", "devil:prevaricator", "devil:defame", "devil:imagination", "devil:alderman",
              "devil:incumbent"]
TRANSFORMER = [{"transformer": {"layers": "-1,-2", "subtoken_pooling": "mean"}}]


@dataclass
class Finished:
    """A run's output and what it looked like after each run."""

    output: Path
    docs: dict[str, str]                    # id -> text of every document the output must hold
    summaries: list[RunSummary]
    leftovers: list[list[str]]              # empty folders and temp files after each run
    config: object


def _leftovers(output: Path) -> list[str]:
    """Empty folders, temp files and in-flight names anywhere under ``output``."""
    found = []
    for folder, subfolders, files in os.walk(output):
        relative = os.path.relpath(folder, output)
        if not subfolders and not files:
            found.append(f"empty folder {relative}")
        found += [f"temp file {relative}/{name}" for name in files if name.startswith(".tmp-")]
    found += [f"in-flight {name}" for name in ("_staging", "_lease.json") if (output / name).exists()]
    return found


def _write_jsonl(path: Path, rows: list[dict | str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))


def _demo_docs(count: int) -> list[dict]:
    everything = {doc["id"]: doc for doc in demo_documents()}
    chosen = [everything[doc_id] for doc_id in NEIGHBOURS]
    chosen += [doc for doc in everything.values() if doc["id"] not in NEIGHBOURS][: count - len(chosen)]
    return [{"id": doc["id"], "text": doc["text"]} for doc in chosen]


@pytest.fixture(scope="module")
def default_run(ray_address, tmp_path_factory) -> Finished:
    """20 documents + 1 empty text (rejected) in two shards, a third shard embedded and then pruned."""
    root = tmp_path_factory.mktemp("default")
    docs = _demo_docs(23)
    kept, pruned = docs[:20], docs[20:]
    _write_jsonl(root / "in" / "a.jsonl", [*kept[:10], {"id": "empty", "text": ""}])
    _write_jsonl(root / "in" / "b.jsonl", kept[10:])
    _write_jsonl(root / "in" / "c.jsonl", pruned)
    config = parse_config({"input": {"path": str(root / "in"), "id_field": "id"},
                           "output": {"path": str(root / "out")}, "max_reject_ratio": 0.2})
    first = run(config, progress=False)
    assert first.ok and (first.units_done, first.rows_in, first.rows_out) == (3, 24, 23), first.lines()
    after_first = _leftovers(root / "out")
    (root / "in" / "c.jsonl").unlink()
    second = run(config, progress=False)
    assert second.ok and len(second.removed) == 1 and second.units_done == 0, second.lines()
    return Finished(root / "out", {doc["id"]: doc["text"] for doc in kept}, [first, second],
                    [after_first, _leftovers(root / "out")], config)


@pytest.fixture(scope="module")
def text_run(ray_address, tmp_path_factory) -> Finished:
    """A transformer stack (two layers, mean subtokens) keeping each document's text; one bad line."""
    root = tmp_path_factory.mktemp("keep_text")
    docs = _demo_docs(8)
    _write_jsonl(root / "in" / "docs.jsonl", [*docs[:4], '{"id": "broken", "text": ', *docs[4:]])
    config = parse_config({"input": {"path": str(root / "in"), "id_field": "id"},
                           "output": {"path": str(root / "out"), "keep_text": True},
                           "stack": TRANSFORMER, "pooling": "mean", "max_reject_ratio": 0.2})
    summary = run(config, progress=False)
    assert summary.ok and (summary.rows_in, summary.rows_out, summary.rows_rejected) == (9, 8, 1), summary.lines()
    return Finished(root / "out", {doc["id"]: doc["text"] for doc in docs}, [summary],
                    [_leftovers(root / "out")], config)


def _readme_blocks(language: str) -> list[str]:
    """The ``language`` code blocks of the README's Output section, the output path put in by the caller."""
    text = README.read_text()
    section = re.search(r"^## Output\n(.*?)(?=^## )", text, re.S | re.M).group(1)
    return re.findall(rf"^```{language}\n(.*?)^```", section, re.S | re.M)


def _nearest_expected(output: Path) -> dict[str, float]:
    """Cosine similarity of every other document to QUERY_ID, computed here from pyarrow and numpy."""
    table = ds.dataset(str(output), format="parquet").to_table(columns=["id", "vector"])
    ids = table.column("id").to_pylist()
    vectors = table.column("vector").combine_chunks().flatten().to_numpy().reshape(len(ids), -1).astype(np.float64)
    query = vectors[ids.index(QUERY_ID)]
    scores = vectors @ query / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(query))
    return {doc_id: float(score) for doc_id, score in zip(ids, scores) if doc_id != QUERY_ID}


def _assert_nearest(got: list[tuple[str, float]], expected: dict[str, float]) -> None:
    """Five neighbours, best first, each with its right score; ties may come in either order."""
    top = sorted(expected.values(), reverse=True)[:5]
    assert len(got) == 5
    assert [score for _, score in got] == sorted((score for _, score in got), reverse=True)
    for (doc_id, score), best in zip(got, top):
        assert score == pytest.approx(expected[doc_id], abs=1e-4)
        assert score == pytest.approx(best, abs=1e-4)


def test_data_glob_reads_exactly_the_documents(default_run: Finished) -> None:
    output = default_run.output
    ids = duckdb.sql(f"SELECT id FROM read_parquet('{output}/data/**/*.parquet')").fetchall()
    assert sorted(row[0] for row in ids) == sorted(default_run.docs)
    assert sorted(pl.read_parquet(f"{output}/data/**/*.parquet")["id"].to_list()) == sorted(default_run.docs)
    assert sorted(ds.dataset(str(output), format="parquet").to_table().column("id").to_pylist()) == sorted(default_run.docs)
    rejects = pq.read_table(next((output / "_rejects").glob("*/part-*.parquet"))).to_pylist()
    assert [(row["id"], row["reason"]) for row in rejects] == [("empty", "empty_text")]


def test_readme_duckdb_queries_run_as_written(default_run: Finished) -> None:
    (block,) = _readme_blocks("sql")
    assert "vector::FLOAT[384]" in block and "array_cosine_similarity" in block
    output = str(default_run.output)
    column_types = duckdb.sql(f"SELECT DISTINCT typeof(vector), typeof(vector::FLOAT[384]) "
                              f"FROM read_parquet('{output}/data/**/*.parquet')").fetchall()
    assert column_types == [("FLOAT[]", "FLOAT[384]")]          # why the README's cast is there

    count, metadata, nearest = [duckdb.sql(statement.replace(README_OUTPUT, output)).fetchall()
                                for statement in block.split(";") if statement.strip()]
    assert count == [(20, 20)]
    assert dict(metadata) == {"corpus_embed.stack": "sentence_transformer(model=default)",
                              "corpus_embed.pooling": default_run.config.pooling_description,
                              "corpus_embed.dim": "384"}
    _assert_nearest(nearest, _nearest_expected(default_run.output))


@pytest.mark.parametrize("library", ["polars", "pandas"])
def test_readme_python_snippets_run_as_written(default_run: Finished, library: str) -> None:
    (snippet,) = [block for block in _readme_blocks("python") if f"import {library}" in block]
    namespace: dict = {}
    exec(compile(snippet.replace(README_OUTPUT, str(default_run.output)), f"README ({library})", "exec"), namespace)
    nearest = namespace["nearest"]
    rows = nearest.rows() if library == "polars" else list(nearest.itertuples(index=False, name=None))
    _assert_nearest([(doc_id, float(score)) for doc_id, score in rows], _nearest_expected(default_run.output))


def test_keep_text_stores_the_text_beside_the_vector(text_run: Finished, default_run: Finished) -> None:
    table = ds.dataset(str(text_run.output), format="parquet").to_table()
    assert table.schema.names == ["id", "text", "n_tokens", "vector"]
    assert dict(zip(table.column("id").to_pylist(), table.column("text").to_pylist())) == text_run.docs
    texts = duckdb.sql(f"SELECT id, text FROM read_parquet('{text_run.output}/data/**/*.parquet')").fetchall()
    assert dict(texts) == text_run.docs
    assert ds.dataset(str(default_run.output), format="parquet").schema.names == ["id", "n_tokens", "vector"]


@pytest.mark.parametrize("which", ["default_run", "text_run"])
def test_parquet_metadata_describes_the_stack(which: str, request: pytest.FixtureRequest) -> None:
    finished: Finished = request.getfixturevalue(which)
    config, summary = finished.config, finished.summaries[0]
    manifest = json.loads((finished.output / "_manifest.json").read_text())
    files = sorted((finished.output / "data").glob("*/*.parquet"))
    assert files
    for path in files:
        metadata = {key.decode(): value.decode() for key, value in pq.read_metadata(path).metadata.items()
                    if key.startswith(b"corpus_embed.")}
        assert metadata == {
            "corpus_embed.stack": ", ".join(spec.describe() for spec in config.specs),
            "corpus_embed.pooling": config.pooling_description,
            "corpus_embed.stack_fingerprint": summary.stack_fingerprint,
            "corpus_embed.dim": "384",
            "corpus_embed.dtype": "float32",
            "corpus_embed.granularity": "document",
            "corpus_embed.version": metadata["corpus_embed.version"],
            "corpus_embed.run_id": summary.run_id,
        }
        assert metadata["corpus_embed.stack_fingerprint"] == manifest["stack_fingerprint"]
    if which == "text_run":
        assert metadata["corpus_embed.pooling"] == "mean"
        assert metadata["corpus_embed.stack"].startswith("transformer(model=default, layers=-1,-2, ")
        assert "subtoken_pooling=mean" in metadata["corpus_embed.stack"]
    else:
        assert metadata["corpus_embed.stack"] == "sentence_transformer(model=default)"


@pytest.mark.parametrize("which", ["default_run", "text_run"])
def test_finished_output_has_no_empty_folders_or_temp_files(which: str, request: pytest.FixtureRequest) -> None:
    finished: Finished = request.getfixturevalue(which)
    assert finished.leftovers == [[]] * len(finished.summaries)
    # The runs did exercise rejects (and, for the default run, a prune): their folders are there.
    assert list((finished.output / "_rejects").glob("*/part-00000.parquet"))
    assert not (finished.output / "_failed").exists()
