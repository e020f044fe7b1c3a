"""The ledger: commit, skip, replace and forget per unit; the digest; the output's identity."""
from __future__ import annotations

import pytest

from pipeline.ledger import CommitRecord, Committed, Ledger, Manifest, OutputMismatchError, check_compatible
from pipeline.storage import Folder


@pytest.fixture
def ledger(tmp_path) -> Ledger:
    return Ledger(Folder(str(tmp_path / "out")))


def _record(unit: str, source: str, settings: str = "s1", rows: int = 3, precision: str = "float32") -> CommitRecord:
    return CommitRecord(unit=unit, source=source, settings=settings, shard=f"{unit}.jsonl", shard_url=f"/in/{unit}.jsonl",
                        size=10, version="v", row_groups=None, rows_in=rows, rows_out=rows, rows_rejected=0,
                        reasons={}, tokens=rows * 4, dim=8, id_type="string", files=[f"data/{unit}/part-00000.parquet"],
                        stack_fingerprint="f" * 32, precision=precision, run_id="r1")


def test_commit_then_listed_with_both_halves_of_the_identity(ledger) -> None:
    assert ledger.committed() == {}
    ledger.commit(_record("unit-a", "src1"))
    ledger.commit(_record("unit-b", "src9", settings="s2", rows=5))
    committed = ledger.committed()
    assert committed == {"unit-a": Committed("unit-a", "src1", "s1"), "unit-b": Committed("unit-b", "src9", "s2")}
    records = sorted(ledger.read(list(committed.values())), key=lambda r: r.unit)
    assert [(r.unit, r.rows_in, r.tokens) for r in records] == [("unit-a", 3, 12), ("unit-b", 5, 20)]


def test_recommit_under_a_new_identity_replaces_the_old_record(ledger, tmp_path) -> None:
    ledger.commit(_record("unit-a", "src1"))
    previous = ledger.committed()["unit-a"]
    ledger.commit(_record("unit-a", "src1", settings="s2", rows=4), previous=previous)
    assert ledger.committed()["unit-a"] == Committed("unit-a", "src1", "s2")
    assert [p.name for p in (tmp_path / "out" / "_ledger").iterdir()] == ["unit-a@src1-s2.json"]


def test_forget_removes_unit(ledger) -> None:
    ledger.commit(_record("unit-a", "src1"))
    ledger.forget(ledger.committed()["unit-a"])
    assert "unit-a" not in ledger.committed()


def test_digest_serves_records_and_reads_only_newer_ones(ledger, tmp_path) -> None:
    for index in range(5):
        ledger.commit(_record(f"unit-{index}", f"src{index}"))
    assert ledger.refresh_digest() == 5
    # A record the digest holds is served from it: deleting its file does not lose its content...
    (tmp_path / "out" / "_ledger" / "unit-0@src0-s1.json").write_text("not json any more")
    ledger.commit(_record("unit-5", "src5", rows=7))        # ...and one committed since is read from its file.
    records = {r.unit: r for r in ledger.read(list(ledger.committed().values()))}
    assert sorted(records) == [f"unit-{i}" for i in range(6)]
    assert records["unit-0"].rows_in == 3 and records["unit-5"].rows_in == 7


def test_no_temp_files_left(ledger, tmp_path) -> None:
    ledger.commit(_record("unit-a", "src1"))
    names = [p.name for p in (tmp_path / "out").rglob("*")]
    assert not [n for n in names if n.startswith(".tmp")]


def test_manifest_identity_refuses_another_stack(ledger) -> None:
    mine = Manifest(stack_fingerprint="aaa", stack=[], pooling="mean", dtype="float32", granularity="document", version="t")
    ledger.write_manifest(mine)
    check_compatible(ledger.manifest(), mine, "out")
    other = Manifest(stack_fingerprint="bbb", stack=[], pooling="mean", dtype="float32", granularity="document", version="t")
    with pytest.raises(OutputMismatchError) as caught:
        check_compatible(ledger.manifest(), other, "out")
    message = str(caught.value)
    assert "'aaa'" in message and "'bbb'" in message and "--overwrite" in message
    assert ledger.manifest().stack_fingerprint == "aaa"
