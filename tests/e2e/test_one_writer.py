"""One writer per output, a poison row never fails a run, ids keep their type, and status tells the truth."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.cli import main
from pipeline.config import parse_config
from pipeline.ledger import Ledger
from pipeline.run import run
from pipeline.status import output_status
from pipeline.storage import Folder
from tests.conftest import demo_documents, output_ids, wait_for, write_shards

pytestmark = pytest.mark.slow


def _config(tmp_path: Path, **input_settings) -> dict:
    return {"input": {"path": str(tmp_path / "corpus"), "id_field": "id", **input_settings},
            "output": {"path": str(tmp_path / "out")}, "resources": {"batch_rows": 10, "read_block_rows": 10}}


def _write_config(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _start(config_path: Path, ray_address: str) -> subprocess.Popen:
    env = {**os.environ, "RAY_ADDRESS": ray_address}
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", "--quiet", str(config_path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)






def test_two_runs_started_together_one_works_the_other_refuses(ray_address, tmp_path) -> None:
    docs = write_shards(tmp_path / "corpus", demo_documents()[:40], shards=4)
    config_path = _write_config(tmp_path, _config(tmp_path))
    runs = [_start(config_path, ray_address) for _ in range(2)]
    results = [(process.wait(timeout=300), *process.communicate()) for process in runs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], [(code, err[-1500:]) for code, _, err in results]
    refused = next(err for code, _, err in results if code == 2)
    assert "is being written by run " in refused and len(refused.strip().splitlines()) == 1
    ids = output_ids(tmp_path / "out")
    assert len(ids) == len(set(ids)) == len(docs)
    assert len(list((tmp_path / "out" / "_runs").glob("*.json"))) == 1


def test_a_run_started_while_another_embeds_exits_2_naming_it(ray_address, tmp_path) -> None:
    docs = write_shards(tmp_path / "corpus", demo_documents()[:120], shards=12)
    config_path = _write_config(tmp_path, _config(tmp_path))
    ledger = Ledger(Folder(str(tmp_path / "out")))
    first = _start(config_path, ray_address)
    try:
        assert wait_for(lambda: first.poll() is not None or ledger.committed())
        assert first.poll() is None, "the first run finished too early"
        running = output_status(str(tmp_path / "out"))
        assert running["running"]["live"] and running["units_pending"] > 0
        started = time.monotonic()
        second = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", str(config_path)],
                                env={**os.environ, "RAY_ADDRESS": ray_address}, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and time.monotonic() - started < 30
        assert running["running"]["run_id"] in second.stderr
        assert first.wait(timeout=300) == 0, first.communicate()[1][-2000:]
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    ids = output_ids(tmp_path / "out")
    assert len(ids) == len(set(ids)) == len(docs)
    assert output_status(str(tmp_path / "out"))["running"] is None


def test_status_during_and_after_a_killed_run(ray_address, tmp_path, capsys) -> None:
    write_shards(tmp_path / "corpus", demo_documents()[:120], shards=12)
    config_path = _write_config(tmp_path, _config(tmp_path))
    output = tmp_path / "out"
    driver = _start(config_path, ray_address)
    try:
        # Before the first commit: the run is there, and everything is pending (not "0 pending").
        assert wait_for(lambda: (output / "_lease.json").exists() and (output / "_manifest.json").exists())
        early = output_status(str(output))
        assert early["running"]["live"] and early["units_done"] + early["units_pending"] == 12
        assert wait_for(lambda: len(Ledger(Folder(str(output))).committed()) >= 2)
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    after = output_status(str(output))
    done = after["units_done"]
    assert 2 <= done < 12 and after["units_pending"] == 12 - done and not after["running"]["live"]
    assert main(["status", str(output)]) == 0
    shown = capsys.readouterr().out
    assert f"units: {done} done, {12 - done} pending" in shown and "stale lease" in shown

    # A driver killed inside an atomic write leaves its hidden temp file; plant one where it would be.
    (output / "_ledger" / ".tmp-0123456789abcdef").write_bytes(b'{"rows_in": ')

    rerun = run(parse_config(yaml.safe_load(config_path.read_text())), progress=False)
    assert rerun.ok and rerun.units_skipped == done and rerun.lease_taken_over
    final = output_status(str(output))
    assert (final["units_done"], final["units_pending"], final["running"]) == (12, 0, None)
    assert [p for p in output.rglob("*") if p.name.startswith(".tmp-") or "_staging" in p.parts] == []


def test_status_of_a_missing_output_exits_2(tmp_path, capsys) -> None:
    assert main(["status", str(tmp_path / "nothing-here")]) == 2
    assert "holds no corpus-embed output" in capsys.readouterr().err


def test_poison_rows_in_every_format_never_fail_the_run(ray_address, tmp_path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    good = [{"id": f"g{i}", "text": f"a perfectly good document number {i}"} for i in range(60)]
    lines = [json.dumps(doc) for doc in good[:20]] + ['{"id": "poison", "text": "lone \\ud800 surrogate"}']
    (corpus / "a.jsonl").write_text("\n".join(lines) + "\n")
    (corpus / "b.txt").write_bytes(b"\n".join([doc["text"].encode() for doc in good[20:40]] + [b"lone \xed\xa0\x80 bytes"]) + b"\n")
    texts = pa.array([doc["text"].encode() for doc in good[40:60]] + [b"bad \xed\xa0\x80 bytes"], pa.binary())
    sink = io.BytesIO()
    pq.write_table(pa.table({"id": [doc["id"] for doc in good[40:60]] + ["poison-pq"], "text": texts.view(pa.string())}), sink)
    (corpus / "c.parquet").write_bytes(sink.getvalue())
    summary = run(parse_config({**_config(tmp_path), "input": {"path": str(corpus), "id_field": "id"}}), progress=False)
    assert summary.ok, summary.lines()
    assert summary.rejects_by_reason == {"invalid_text": 1, "invalid_utf8": 2}
    table = ds.dataset(str(tmp_path / "out" / "data"), format="parquet").to_table(columns=["id"])
    # b.txt has no id field: its ids are "<shard>:<row>".
    expected = {doc["id"] for doc in good[:20] + good[40:60]} | {f"b.txt:{row}" for row in range(20)}
    assert set(table.column("id").to_pylist()) == expected and table.num_rows == 60
    rejects = ds.dataset(str(tmp_path / "out" / "_rejects"), format="parquet").to_table().to_pylist()
    assert {(r["reason"], r["id"]) for r in rejects} == {("invalid_text", "poison"), ("invalid_utf8", "b.txt:20"),
                                                         ("invalid_utf8", "poison-pq")}


def test_ids_keep_their_type_and_duplicates_across_shards_are_reported(ray_address, tmp_path, capsys) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.jsonl").write_text("".join(json.dumps({"id": i, "text": f"int id {i}"}) + "\n" for i in range(10)))
    (corpus / "b.jsonl").write_text("".join(json.dumps({"id": i, "text": f"again {i}"}) + "\n" for i in range(8, 12)))
    summary = run(parse_config(_config(tmp_path)), progress=False)
    assert summary.ok
    table = ds.dataset(str(tmp_path / "out" / "data"), format="parquet").to_table()
    assert table.schema.field("id").type == pa.int64() and sorted(table.column("id").to_pylist())[:3] == [0, 1, 2]
    assert main(["status", str(tmp_path / "out"), "--check"]) == 0
    assert "2 ids occur more than once, e.g. 8 x2, 9 x2" in capsys.readouterr().out

    (corpus / "c.jsonl").write_text("".join(json.dumps({"id": f"s{i}", "text": f"string id {i}"}) + "\n" for i in range(3)))
    mixed = run(parse_config(_config(tmp_path)), progress=False)
    assert not mixed.ok and [f.shard for f in mixed.units_failed] == ["c.jsonl"]
    assert "its ids are strings but this output's ids are ints; set input.id_type" in mixed.units_failed[0].reason
