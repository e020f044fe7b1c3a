"""Read blocks leave the read task in text-length order, every row kept, so actor calls hold like lengths."""
from __future__ import annotations

import json

from pipeline.config import InputConfig
from pipeline.ray_pipeline import length_sorted
from pipeline.readers import read_unit
from pipeline.sources import discover_shards
from pipeline.units import plan_units


def test_each_block_is_sorted_by_text_length_and_keeps_every_row(tmp_path) -> None:
    texts = ["a much longer document than the rest", "mid length", "tiny", "also mid!!", "x",
             "the longest document of this whole shard, by far", "four", "ab"]
    lines = [json.dumps({"id": f"d{i}", "text": text}) for i, text in enumerate(texts)]
    lines.insert(3, "{not json")                                     # a reject inside the first block
    path = tmp_path / "shard.jsonl"
    path.write_text("\n".join(lines) + "\n")
    config = InputConfig(path=str(path), id_field="id")
    (unit,) = plan_units(discover_shards(config)[0], config)

    blocks = list(read_unit(unit, config, block_rows=5))
    ordered = [length_sorted(block) for block in blocks]

    assert [block.num_rows for block in ordered] == [block.num_rows for block in blocks]
    for before, after in zip(blocks, ordered):
        assert sorted(after.column("seq").to_pylist()) == sorted(before.column("seq").to_pylist())
        rows = after.to_pylist()
        docs = [row for row in rows if row["kind"] == "doc"]
        lengths = [len(row["text"]) for row in docs]
        assert lengths == sorted(lengths)
        # rows without text (rejects, the unit's end row) come after the documents
        assert rows[:len(docs)] == docs
        # equal lengths keep their order in the shard
        for first, second in zip(docs, docs[1:]):
            if len(first["text"]) == len(second["text"]):
                assert first["seq"] < second["seq"]
    first, second = (block.to_pylist() for block in ordered)
    assert [row["text"] for row in first if row["kind"] == "doc"] == ["tiny", "mid length", "also mid!!",
                                                                      "a much longer document than the rest"]
    assert [row["kind"] for row in second][-1] == "end"
    assert [row["text"] for row in second if row["kind"] == "doc"] == [
        "x", "ab", "four", "the longest document of this whole shard, by far"]
