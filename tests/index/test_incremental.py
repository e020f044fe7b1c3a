"""Incremental builds: a new, a changed and a deleted shard → the index holds exactly the current ids.

Outputs are written as a run writes them (Parquet under data/, ledger commits), with known vectors.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.index import IndexBuildError, IndexReader, build_index
from pipeline.index.commands import format_hits
from pipeline.index.layout import load_meta
from pipeline.storage import Folder
from tests.index.fake_output import FakeOutput, clustered_vectors

DIM = 16


def _ids(prefix: str, start: int, stop: int) -> list[str]:
    return [f"{prefix}:{i}" for i in range(start, stop)]


def _files(index: Path) -> list[str]:
    return sorted(str(path.relative_to(index)) for path in index.rglob("*") if path.is_file())


def _check_exact_contents(reader: IndexReader, output: FakeOutput, kind: str) -> None:
    assert sorted(reader.live_ids()) == output.current_ids()
    assert reader.meta.count == len(output.current_ids())
    ids, vectors = output.current_vectors()
    k = 10
    hits = reader.search_vectors(vectors, k)
    assert all(len(found) == k for found in hits), "a removed label leaked into the results"
    own = np.mean([ids[i] in {hit.id for hit in found} for i, found in enumerate(hits)])
    top1 = np.mean([found[0].id == ids[i] for i, found in enumerate(hits)])
    assert own >= (0.9 if kind == "ivfpq" else 0.99), (kind, own)
    if kind == "flat":
        assert top1 == 1.0


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivfpq"])
def test_add_replace_delete(tmp_path: Path, kind: str) -> None:
    output = FakeOutput(tmp_path / "out", DIM)
    for seed, unit in enumerate(("a", "b", "c")):
        output.commit(unit, _ids(unit, 0, 400), clustered_vectors(400, DIM, seed), parts=2)
    index = tmp_path / "index"
    first = build_index(output.url, str(index), kind)
    assert (first.fresh, first.units_added, first.count) == (True, ["a", "b", "c"], 1200)
    _check_exact_contents(IndexReader(str(index)), output, kind)

    old_b = output.units["b"][1]
    old_c = output.units["c"][1]
    output.commit("d", _ids("d", 0, 300), clustered_vectors(300, DIM, 10))                          # new shard
    output.commit("b", _ids("b", 200, 650), clustered_vectors(450, DIM, 11), version="v2")        # changed shard
    output.delete("c")                                                                              # deleted shard
    second = build_index(output.url, str(index))
    assert (second.fresh, second.kind) == (False, kind)
    assert (second.units_added, second.units_replaced, second.units_removed) == (["d"], ["b"], ["c"])
    assert (second.vectors_added, second.vectors_removed) == (300 + 450, 400 + 400)
    reader = IndexReader(str(index))
    _check_exact_contents(reader, output, kind)
    assert set(reader.meta.units) == {"a", "b", "d"}
    if kind != "ivfpq":   # the old vectors are gone: none is found as its own exact match any more
        for old in (old_b, old_c):
            assert max(found[0].score for found in reader.search_vectors(old, 1)) < 0.9999

    files = _files(index)
    assert files == sorted(["index.json", reader.meta.index_file,
                            *[reader.meta.idmap_path(unit) for unit in ("a", "b", "d")]])

    third = build_index(output.url, str(index))
    assert not third.changed and third.generation == second.generation
    assert _files(index) == files


def test_hnsw_tombstones_then_compaction(tmp_path: Path) -> None:
    output = FakeOutput(tmp_path / "out", DIM)
    for unit in range(10):
        output.commit(f"u{unit}", _ids(f"u{unit}", 0, 100), clustered_vectors(100, DIM, unit))
    index = str(tmp_path / "index")
    build_index(output.url, index, "hnsw")

    output.delete("u3")                                     # 10% dead: filtered at search time
    summary = build_index(output.url, index)
    reader = IndexReader(index)
    assert not summary.compacted and reader.meta.removed and reader.meta.tombstoned == 100
    assert reader.index.ntotal == 1000 and reader.meta.count == 900
    _check_exact_contents(reader, output, "hnsw")

    output.delete("u4")
    output.delete("u5")                                     # 30% dead: the graph is rebuilt without them
    summary = build_index(output.url, index)
    reader = IndexReader(index)
    assert summary.compacted and reader.meta.removed == [] and reader.index.ntotal == reader.meta.count == 700
    _check_exact_contents(reader, output, "hnsw")


def test_kind_change_needs_rebuild(tmp_path: Path) -> None:
    output = FakeOutput(tmp_path / "out", DIM)
    output.commit("a", _ids("a", 0, 50), clustered_vectors(50, DIM, 1))
    index = str(tmp_path / "index")
    build_index(output.url, index, "flat")
    with pytest.raises(IndexBuildError, match="--rebuild"):
        build_index(output.url, index, "hnsw")
    before = load_meta(Folder(index))
    rebuilt = build_index(output.url, index, "hnsw", rebuild=True)
    after = load_meta(Folder(index))
    assert rebuilt.fresh and after.kind == "hnsw" and after.generation == before.generation + 1
    assert after.units["a"].first_label == before.next_label     # labels are never reused
    assert sorted(IndexReader(index).live_ids()) == output.current_ids()
    assert _files(Path(index)) == sorted(["index.json", after.index_file, after.idmap_path("a")])


def test_output_of_another_stack_is_refused(tmp_path: Path) -> None:
    output = FakeOutput(tmp_path / "out", DIM)
    output.commit("a", _ids("a", 0, 50), clustered_vectors(50, DIM, 1))
    index = str(tmp_path / "index")
    build_index(output.url, index, "flat")
    other = FakeOutput(tmp_path / "other", DIM, stack_fingerprint="e" * 32)
    other.commit("a", _ids("a", 0, 50), clustered_vectors(50, DIM, 1))
    with pytest.raises(IndexBuildError, match=r"stack f{32}.*stack e{32}.*--rebuild"):
        build_index(other.url, index)


def test_not_an_output_and_ivfpq_too_small(tmp_path: Path) -> None:
    with pytest.raises(IndexBuildError, match="no _manifest.json"):
        build_index(str(tmp_path / "nothing"), str(tmp_path / "index"))
    output = FakeOutput(tmp_path / "out", DIM)
    with pytest.raises(IndexBuildError, match="no committed units"):
        build_index(output.url, str(tmp_path / "index"))
    output.commit("a", _ids("a", 0, 50), clustered_vectors(50, DIM, 1))
    with pytest.raises(IndexBuildError, match="ivfpq .* at least 1,000.*--kind hnsw"):
        build_index(output.url, str(tmp_path / "index"), "ivfpq")


def test_sentence_output_float16_keeps_snippets(tmp_path: Path) -> None:
    output = FakeOutput(tmp_path / "out", DIM, granularity="sentence", dtype="float16")
    texts = [f"sentence number {i} " + "x" * 300 for i in range(60)]
    output.commit("a", _ids("a", 0, 60), clustered_vectors(60, DIM, 3), texts=texts)
    index = str(tmp_path / "index")
    build_index(output.url, index, "flat")
    reader = IndexReader(index)
    _, vectors = output.current_vectors()
    hit = reader.search_vectors(vectors[7].astype(np.float16).astype(np.float32), 1)[0][0]
    assert (hit.id, hit.sentence) == ("a:7", 7 % 3)
    assert hit.text == texts[7][:200] and hit.score > 0.999


def test_big_unit_hits_resolve_across_id_map_row_groups(tmp_path: Path) -> None:
    output = FakeOutput(tmp_path / "out", 8)
    vectors = clustered_vectors(20_000, 8, 5, spread=2.0)
    output.commit("big", _ids("big", 0, 20_000), vectors, parts=3)
    index = str(tmp_path / "index")
    build_index(output.url, index, "flat")
    reader = IndexReader(index)
    rows = [0, 8_191, 8_192, 13_337, 19_999]
    assert [found[0].id for found in reader.search_vectors(vectors[rows], 1)] == [f"big:{row}" for row in rows]


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_int_ids_are_indexed_and_returned_as_ints(tmp_path: Path, kind: str) -> None:
    output = FakeOutput(tmp_path / "out", DIM, id_type="int")
    output.commit("a", list(range(0, 300)), clustered_vectors(300, DIM, 1))
    output.commit("b", list(range(10_000, 10_200)), clustered_vectors(200, DIM, 2), parts=2)
    index = str(tmp_path / "index")
    build_index(output.url, index, kind)
    reader = IndexReader(index)
    assert reader.meta.id_type == "int"
    live = sorted(reader.live_ids())
    assert live == output.current_ids() and all(type(i) is int for i in live)
    _check_exact_contents(reader, output, kind)
    ids, vectors = output.current_vectors()
    hits = reader.search_vectors(vectors[295:305], 3)
    assert [found[0].id for found in hits] == ids[295:305]
    assert all(type(hit.id) is int for found in hits for hit in found)
    assert json.loads(json.dumps(hits[0][0].to_dict()))["id"] == ids[295]
    printed = format_hits(hits[0], "document").splitlines()
    assert printed[0].split() == ["rank", "score", "id"] and printed[1].split()[2] == str(ids[295])

    output.commit("b", list(range(10_100, 10_250)), clustered_vectors(150, DIM, 3), version="v2")
    second = build_index(output.url, index)
    assert (second.units_replaced, second.count) == (["b"], 450)
    reader = IndexReader(index)
    assert sorted(reader.live_ids()) == output.current_ids()
    _check_exact_contents(reader, output, kind)


def test_string_id_index_refuses_an_int_id_output(tmp_path: Path) -> None:
    strings = FakeOutput(tmp_path / "strings", DIM)
    strings.commit("a", _ids("a", 0, 50), clustered_vectors(50, DIM, 1))
    index = str(tmp_path / "index")
    build_index(strings.url, index, "flat")
    ints = FakeOutput(tmp_path / "ints", DIM, id_type="int")
    ints.commit("a", list(range(50)), clustered_vectors(50, DIM, 1))
    with pytest.raises(IndexBuildError, match="string ids.*ints.*--rebuild"):
        build_index(ints.url, index)
    assert build_index(ints.url, index, rebuild=True).fresh
    assert sorted(IndexReader(index).live_ids()) == list(range(50))


def test_a_unit_whose_row_settings_changed_is_read_again(tmp_path: Path) -> None:
    """A unit's identity is its source and its settings: the same shard committed under new settings
    (another text field, say) holds other vectors, so the index replaces it."""
    output = FakeOutput(tmp_path / "out", DIM)
    output.commit("a", _ids("a", 0, 50), clustered_vectors(50, DIM, 1))
    output.commit("b", _ids("b", 0, 50), clustered_vectors(50, DIM, 2))
    index = str(tmp_path / "index")
    build_index(output.url, index, "flat")
    output.commit("a", _ids("a", 0, 40), clustered_vectors(40, DIM, 3), settings="s1")
    summary = build_index(output.url, index)
    assert (summary.units_added, summary.units_replaced, summary.units_removed) == ([], ["a"], [])
    reader = IndexReader(index)
    assert reader.meta.units["a"].identity.endswith("-s1") and reader.meta.count == 90
    _check_exact_contents(reader, output, "flat")


def test_a_crashed_publication_leaves_the_index_readable_and_is_swept(tmp_path: Path) -> None:
    output = FakeOutput(tmp_path / "out", DIM)
    output.commit("a", _ids("a", 0, 50), clustered_vectors(50, DIM, 1))
    index = Path(tmp_path / "index")
    build_index(output.url, str(index), "flat")
    (index / ".tmp-0123").write_bytes(b"half a faiss file")                  # what a killed build leaves
    (index / "idmap" / "a" / ".tmp-4567").write_bytes(b"half an id map")
    (index / "index-000099.faiss").write_bytes(b"never committed")
    assert sorted(IndexReader(str(index)).live_ids()) == output.current_ids()
    output.commit("b", _ids("b", 0, 50), clustered_vectors(50, DIM, 2))
    build_index(output.url, str(index))
    reader = IndexReader(str(index))
    assert _files(index) == sorted(["index.json", reader.meta.index_file, *[reader.meta.idmap_path(u) for u in "ab"]])


def test_a_format_1_index_is_read_and_its_units_replaced(tmp_path: Path) -> None:
    """Format 1 keyed units by the source fingerprint alone; its entries match no current identity
    (source and settings), so the next build reads every unit again and writes format 2."""
    output = FakeOutput(tmp_path / "out", DIM)
    output.commit("a", _ids("a", 0, 50), clustered_vectors(50, DIM, 1))
    index = tmp_path / "index"
    build_index(output.url, str(index), "hnsw")
    meta = json.loads((index / "index.json").read_text())
    meta["format_version"] = 1
    del meta["id_type"]
    for entry in meta["units"].values():
        entry["source_fingerprint"] = entry.pop("identity").rsplit("-", 1)[0]
    (index / "index.json").write_text(json.dumps(meta))
    assert sorted(IndexReader(str(index)).live_ids()) == output.current_ids()
    summary = build_index(output.url, str(index))
    assert summary.units_replaced == ["a"] and summary.count == 50
    after = load_meta(Folder(str(index)))
    assert (after.format_version, after.id_type) == (2, "string")
    _check_exact_contents(IndexReader(str(index)), output, "hnsw")
