"""End to end: `pipeline.run.run` embeds a few documents on a local Ray, the index is built from that
output, and a search with the packaged model finds each document by its own text."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.config import parse_config
from pipeline.index import IndexReader, Searcher
from pipeline.run import run
from tests.conftest import demo_documents

pytestmark = pytest.mark.slow


def _write(path: Path, docs: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(doc) + "\n" for doc in docs))


def test_run_build_search_then_refresh(ray_address, tmp_path: Path, capsys) -> None:
    docs = demo_documents()[100:112]
    _write(tmp_path / "in" / "one.jsonl", docs[:6])
    _write(tmp_path / "in" / "two.jsonl", docs[6:])
    config = parse_config({"input": {"path": str(tmp_path / "in"), "id_field": "id"},
                           "output": {"path": str(tmp_path / "out")},
                           "resources": {"cpus_per_actor": 0.5, "batch_rows": 8}})
    assert run(config, progress=False).ok
    index = str(tmp_path / "index")
    assert main(["index", "build", str(tmp_path / "out"), index, "--kind", "flat", "--quiet"]) == 0
    assert "holds 12 vectors of dim 384" in capsys.readouterr().out

    searcher = Searcher(index)
    for doc in docs:
        assert searcher.search(doc["text"], k=1)[0].id == doc["id"]
    assert main(["search", index, docs[3]["text"], "-k", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6 and lines[1].split()[2] == docs[3]["id"]

    # The corpus changes: one shard rewritten, another added; the next build follows the ledger.
    extra = demo_documents()[200:204]
    _write(tmp_path / "in" / "two.jsonl", docs[6:9])
    _write(tmp_path / "in" / "three.jsonl", extra)
    assert run(config, progress=False).ok
    assert main(["index", "build", str(tmp_path / "out"), index, "--json", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (len(summary["units_added"]), len(summary["units_replaced"]), summary["count"]) == (1, 1, 13)
    expected = sorted(doc["id"] for doc in docs[:9] + extra)
    assert sorted(IndexReader(index).live_ids()) == expected
