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
    rejects = {r["row"]: r["reason"] for r in rows if r["kind"] == "reject"}
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
    assert [r["reason"] for r in rejects] == ["truncated_stream"]
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
    assert [(r["id"], r["kind"], r["reason"]) for r in rows] == [("x", "doc", None), ("y", "reject", "missing_text"), (None, "end", None)]
    rows = _read(good, text_field="text")
    assert rows[0]["reason"] == "missing_column" and "body" in rows[0]["detail"]


def test_empty_shard_still_ends(tmp_path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    rows = _read(path)
    assert [(r["kind"], r["seq"]) for r in rows] == [("end", 0)]


def test_lone_surrogates_are_rejected_at_the_row(tmp_path) -> None:
    """A JSON escape for a lone surrogate decodes to a str Arrow cannot store: that row is rejected, not the shard."""
    path = tmp_path / "poison.jsonl"
    path.write_text('{"id": "a", "text": "fine"}\n'
                    '{"id": "b", "text": "lone \\ud800 x"}\n'
                    '{"id": "c\\udfff", "text": "id poisoned"}\n'
                    '{"id": "d", "text": "also fine"}\n')
    rows = _read(path, id_field="id")
    assert [(r["id"], r["text"]) for r in rows if r["kind"] == "doc"] == [("a", "fine"), ("d", "also fine")]
    rejects = {r["row"]: (r["reason"], r["id"]) for r in rows if r["kind"] == "reject"}
    assert rejects == {1: ("invalid_text", "b"), 2: ("bad_id", "c\\udfff")}
    assert pa.Table.from_pylist(rows).num_rows == len(rows)   # every value is storable


def test_parquet_with_invalid_utf8_rejects_that_row_only(tmp_path) -> None:
    """A Parquet file written without UTF-8 checks can hold invalid bytes in a string column."""
    path = tmp_path / "raw.parquet"
    raw = pa.array([b"good", b"lone \xed\xa0\x80 surrogate bytes", b"\xff\xfe", b"also good"], pa.binary())
    pq.write_table(pa.table({"text": raw.view(pa.string())}), path)
    rows = _read(path)
    assert [r["text"] for r in rows if r["kind"] == "doc"] == ["good", "also good"]
    assert [(r["row"], r["reason"]) for r in rows if r["kind"] == "reject"] == [(1, "invalid_utf8"), (2, "invalid_utf8")]


def test_ids_keep_their_type(tmp_path) -> None:
    path = tmp_path / "ids.jsonl"
    path.write_text('{"id": 1, "text": "one"}\n{"id": "1", "text": "string one"}\n{"id": 2, "text": "two"}\n'
                    '{"id": 1, "text": "again"}\n{"id": 2.5, "text": "float"}\n{"id": true, "text": "bool"}\n')
    rows = _read(path, id_field="id")
    assert [(r["id"], r["int_id"]) for r in rows if r["kind"] == "doc"] == [("1", 1), ("2", 2)]
    assert [(r["row"], r["reason"]) for r in rows if r["kind"] == "reject"] == [
        (1, "id_type_mismatch"), (3, "duplicate_id"), (4, "bad_id"), (5, "bad_id")]
    as_strings = _read(path, id_field="id", id_type="string")
    assert [(r["id"], r["int_id"]) for r in as_strings if r["kind"] == "doc"] == [("1", None), ("2", None)]
    assert [r["reason"] for r in as_strings if r["kind"] == "reject"] == ["duplicate_id", "duplicate_id", "bad_id", "bad_id"]


def test_id_type_int_converts_integer_strings(tmp_path) -> None:
    path = tmp_path / "ids.jsonl"
    path.write_text('{"id": "7", "text": "seven"}\n{"id": 8, "text": "eight"}\n{"id": "x9", "text": "nine"}\n')
    rows = _read(path, id_field="id", id_type="int")
    assert [r["int_id"] for r in rows if r["kind"] == "doc"] == [7, 8]
    assert [r["reason"] for r in rows if r["kind"] == "reject"] == ["bad_id"]


def test_a_reader_that_breaks_fails_only_its_unit(tmp_path) -> None:
    """Whatever goes wrong while reading becomes one unreadable_shard reject naming the shard."""
    path = tmp_path / "gone.jsonl"
    path.write_text('{"text": "a"}\n')
    input_config = InputConfig(path=str(path))
    (unit,) = plan_units(discover_shards(input_config)[0], input_config)
    path.unlink()
    rows = pa.concat_tables(list(read_unit(unit, input_config))).to_pylist()
    assert [(r["kind"], r["reason"]) for r in rows] == [("reject", "unreadable_shard"), ("end", None)]
    assert "gone.jsonl" in rows[0]["detail"]
