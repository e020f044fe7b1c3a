"""The job entrypoints called as `python -m jobs.<name>` would call them: exit codes, last lines, JSON."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jobs import build_index as build_index_job
from jobs import embed_corpus, nightly_refresh
from tests.conftest import REPO_ROOT, demo_documents
from tests.index.fake_output import FakeOutput, clustered_vectors


def _write(path: Path, docs: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(doc) + "\n" for doc in docs))


def test_embed_corpus_bad_config_fails_with_the_reason_last(tmp_path: Path) -> None:
    config = tmp_path / "job.yaml"
    config.write_text(f"input: {{path: {tmp_path}}}\noutput: {{path: {tmp_path / 'out'}}}\nresources: {{actors: 0}}\n")
    done = subprocess.run([sys.executable, "-m", "jobs.embed_corpus", str(config)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("embed_corpus FAILED: ") or "resources.actors" in last, done.stderr
    assert "resources.actors" in done.stderr


def test_embed_corpus_missing_config(capsys) -> None:
    assert embed_corpus.main(["/no/such/job.yaml"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "embed_corpus FAILED: config file not found: /no/such/job.yaml"


def test_nightly_refresh_bad_config_still_prints_one_json_line(tmp_path: Path, capsys) -> None:
    assert nightly_refresh.main([str(tmp_path / "missing.yaml"), "--index", str(tmp_path / "index")]) == 2
    out = capsys.readouterr().out.strip().splitlines()
    report = json.loads(out[-1])
    assert report["ok"] is False and "config file not found" in report["error"] and report["job"] == "nightly_refresh"


def test_build_index_job(tmp_path: Path, capsys) -> None:
    output = FakeOutput(tmp_path / "out", 8)
    output.commit("a", ["a:0", "a:1", "a:2"], clustered_vectors(3, 8, 1))
    index = str(tmp_path / "index")
    assert build_index_job.main([output.url, index, "--kind", "flat", "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 3
    assert build_index_job.main([output.url, index, "--quiet"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert build_index_job.main([output.url, index, "--kind", "hnsw", "--quiet"]) == 2
    assert "--rebuild" in capsys.readouterr().err


@pytest.mark.slow
def test_nightly_refresh_runs_then_updates_the_index(ray_address, tmp_path: Path, capsys) -> None:
    docs = demo_documents()[40:64]
    _write(tmp_path / "in" / "one.jsonl", docs[:8])
    _write(tmp_path / "in" / "two.jsonl", docs[8:16])
    config = tmp_path / "job.yaml"
    config.write_text(f"input: {{path: {tmp_path / 'in'}, id_field: id}}\noutput: {{path: {tmp_path / 'out'}}}\n"
                      "resources: {actors: 1, cpus_per_actor: 0.5, batch_rows: 8}\n")
    index = str(tmp_path / "index")

    def nightly() -> dict:
        assert nightly_refresh.main([str(config), "--index", index, "--kind", "hnsw"]) == 0
        lines = capsys.readouterr().out.strip().splitlines()
        return json.loads(lines[-1])

    first = nightly()
    assert first["ok"] and first["run"]["units_done"] == 2 and first["run"]["rows_out"] == 16
    assert first["index_update"] == {**first["index_update"], "fresh": True, "units_added": 2, "count": 16, "kind": "hnsw"}

    (tmp_path / "in" / "one.jsonl").unlink()                       # a shard deleted
    _write(tmp_path / "in" / "three.jsonl", docs[16:24])             # a shard added
    second = nightly()
    assert (second["run"]["shards_added"], second["run"]["shards_removed"], second["run"]["units_done"]) == (1, 1, 1)
    update = second["index_update"]
    assert (update["fresh"], update["units_added"], update["units_removed"], update["count"]) == (False, 1, 1, 16)

    third = nightly()
    assert third["run"]["units_done"] == 0 and third["index_update"]["units_added"] == 0
    assert third["index_update"]["generation"] == second["index_update"]["generation"]
