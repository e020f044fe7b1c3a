"""Readers: every bad row becomes a reject with shard, row and reason; good rows are kept."""
from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import InputConfig
from pipeline.readers import read_unit
from pipeline.sources import discover_shards
from pipeline.units import plan_units


def _read(path, **config):
    input_config = InputConfig(path=str(path), **config)
    (unit,) = plan_units(discover_shards(input_config)[0], input_config)
    table = pa.concat_tables(list(read_unit(unit, input_config, block_rows=3)))
    return table.to_pylist()


def test_jsonl_bad_rows_become_rejects(tmp_path) -> None:
    lines = [
        json.dumps({"id": "a", "text": "good one"}).encode(),
        b"{not json",
        json.dumps({"id": "b"}).encode(),
        json.dumps({"id": "c", "text": 42}).encode(),
        json.dumps({"id": "d", "text": "   "}).encode(),
        b'{"id": "e", "text": "bad \xff utf8"}',
        b"",
        json.dumps({"id": "a", "text": "duplicate id"}).encode(),
        json.dumps([1, 2]).encode(),
        json.dumps({"id": "f", "text": "x" * 50}).encode(),
        json.dumps({"id": "g", "text": "good two"}).encode(),
    ]
    path = tmp_path / "shard.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    rows = _read(path, id_field="id", max_chars=40)
    docs = [(r["id"], r["text"]) for r in rows if r["kind"] == "doc"]
    rejects = {r["row"]: r["reject"] for r in rows if r["kind"] == "reject"}
    assert docs == [("a", "good one"), ("g", "good two")]
    assert rejects == {1: "malformed_json", 2: "missing_text", 3: "not_string", 4: "empty_text",
                       5: "invalid_utf8", 7: "duplicate_id", 8: "not_an_object", 9: "too_long"}
    assert all(r["detail"] for r in rows if r["kind"] == "reject")
    assert rows[-1]["kind"] == "end" and rows[-1]["seq"] == len(rows) - 1
    assert [r["seq"] for r in rows] == list(range(len(rows)))


def test_default_ids_are_shard_key_and_row(tmp_path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text('{"text": "a"}\n\n{"text": "b"}\n')
    rows = _read(path)
    assert [r["id"] for r in rows if r["kind"] == "doc"] == ["s.jsonl:0", "s.jsonl:2"]


def test_truncated_gzip_keeps_rows_before_the_break(tmp_path) -> None:
    data = "".join(json.dumps({"text": f"row {i} " * 20}) + "\n" for i in range(200)).encode()
    compressed = gzip.compress(data, mtime=0)
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(compressed[: len(compressed) // 2])
    rows = _read(path)
    docs = [r for r in rows if r["kind"] == "doc"]
    rejects = [r for r in rows if r["kind"] == "reject"]
    assert 0 < len(docs) < 200
    assert [r["reject"] for r in rejects] == ["truncated_stream"]
    assert "cut.jsonl.gz" in rejects[0]["detail"]


def test_text_format_one_document_per_line(tmp_path) -> None:
    path = tmp_path / "lines.txt"
    path.write_text("first doc\n\nsecond doc\n")
    rows = _read(path)
    assert [(r["id"], r["text"]) for r in rows if r["kind"] == "doc"] == [("lines.txt:0", "first doc"), ("lines.txt:2", "second doc")]


def test_parquet_rows_and_missing_column(tmp_path) -> None:
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"doc": ["x", "y"], "body": ["hello", None]}), good)
    rows = _read(good, text_field="body", id_field="doc")
    assert [(r["id"], r["kind"], r["reject"]) for r in rows] == [("x", "doc", None), ("y", "reject", "missing_text"), (None, "end", None)]
    rows = _read(good, text_field="text")
    assert rows[0]["reject"] == "missing_column" and "body" in rows[0]["detail"]


def test_empty_shard_still_ends(tmp_path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    rows = _read(path)
    assert [(r["kind"], r["seq"]) for r in rows] == [("end", 0)]
