"""Shard discovery and unit planning: deterministic, format-aware, never escaping the output."""
from __future__ import annotations

import gzip
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import InputConfig
from pipeline.sources import InputError, discover_shards
from pipeline.storage import safe_name
from pipeline.units import plan_units


def _jsonl(path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(json.dumps(row) + "\n" for row in rows).encode()
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "corpus"
    _jsonl(root / "b.jsonl", [{"text": "b"}])
    _jsonl(root / "a.jsonl.gz", [{"text": "a"}])
    _jsonl(root / "sub" / "c.json", [{"text": "c"}])
    (root / "d.txt").write_text("one\ntwo\n")
    pq.write_table(pa.table({"text": [f"t{i}" for i in range(100)]}), root / "e.parquet", row_group_size=10)
    (root / "_SUCCESS").write_text("")
    (root / ".hidden.jsonl").write_text("")
    (root / "notes.md").write_text("x")
    return root


def test_discovery_formats_order_and_skips(corpus) -> None:
    shards, skipped = discover_shards(InputConfig(path=str(corpus)))
    assert [(s.key, s.format, s.compression) for s in shards] == [
        ("a.jsonl.gz", "jsonl", "gzip"), ("b.jsonl", "jsonl", None), ("d.txt", "text", None),
        ("e.parquet", "parquet", None), ("sub/c.json", "jsonl", None)]
    assert skipped == ["notes.md"]
    assert all(s.size > 0 and s.version for s in shards)


def test_glob_and_single_file(corpus) -> None:
    shards, _ = discover_shards(InputConfig(path=str(corpus / "*.jsonl*")))
    assert [s.key for s in shards] == ["a.jsonl.gz", "b.jsonl"]
    shards, _ = discover_shards(InputConfig(path=str(corpus / "b.jsonl")))
    assert [s.key for s in shards] == ["b.jsonl"]


def test_missing_and_empty_inputs_fail_clearly(tmp_path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        discover_shards(InputConfig(path=str(tmp_path / "nope")))
    (tmp_path / "only.md").write_text("x")
    with pytest.raises(InputError, match="no shards of a known format"):
        discover_shards(InputConfig(path=str(tmp_path)))


def test_units_are_deterministic_and_split_parquet_row_groups(corpus) -> None:
    config = InputConfig(path=str(corpus), rows_per_unit=30)
    first = plan_units(discover_shards(config)[0], config)
    second = plan_units(discover_shards(config)[0], config)
    assert [u.key for u in first] == [u.key for u in second]
    assert [u.source_fingerprint for u in first] == [u.source_fingerprint for u in second]
    parquet_units = [u for u in first if u.shard.key == "e.parquet"]
    assert [u.row_groups for u in parquet_units] == [(0, 1, 2), (3, 4, 5), (6, 7, 8), (9,)]
    # Keys depend on the shard key alone: the same on any machine (sha1 of the key).
    assert first[0].key == safe_name("a.jsonl.gz") == "a.jsonl.gz-" + __import__("hashlib").sha1(b"a.jsonl.gz").hexdigest()[:10]


def test_source_fingerprint_changes_with_content(corpus) -> None:
    config = InputConfig(path=str(corpus / "b.jsonl"))
    before = plan_units(discover_shards(config)[0], config)[0].source_fingerprint
    _jsonl(corpus / "b.jsonl", [{"text": "b"}, {"text": "changed"}])
    after = plan_units(discover_shards(config)[0], config)[0].source_fingerprint
    assert before != after


@pytest.mark.parametrize("key", ["../../etc/passwd", "/abs/path.jsonl", "a/../../b", "..", "_ledger", ".x", "é ü/ä?*"])
def test_safe_names_never_escape_or_hide(key) -> None:
    name = safe_name(key)
    assert "/" not in name and name not in (".", "..") and not name.startswith(("_", "."))
    assert os.path.basename(name) == name
    assert safe_name(key) == name and safe_name(key + "x") != name
