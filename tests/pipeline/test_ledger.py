"""The ledger: commit, skip, replace and forget per unit; the output's stack identity."""
from __future__ import annotations

import json

import fsspec
import pytest

from pipeline.ledger import Ledger, OutputMismatchError


@pytest.fixture
def ledger(tmp_path) -> Ledger:
    return Ledger(fsspec.filesystem("file"), str(tmp_path / "out"))


def test_commit_then_listed_with_fingerprint(ledger) -> None:
    assert ledger.committed() == {}
    ledger.commit("unit-a", "fp1", {"rows_in": 3})
    ledger.commit("unit-b", "fp9", {"rows_in": 5})
    committed = ledger.committed()
    assert {k: v.source_fingerprint for k, v in committed.items()} == {"unit-a": "fp1", "unit-b": "fp9"}
    records = sorted(ledger.read_records(), key=lambda r: r["unit"])
    assert [r["rows_in"] for r in records] == [3, 5]


def test_recommit_under_new_fingerprint_replaces_the_old(ledger, tmp_path) -> None:
    ledger.commit("unit-a", "fp1", {"rows_in": 3})
    ledger.commit("unit-a", "fp2", {"rows_in": 4})
    assert ledger.committed()["unit-a"].source_fingerprint == "fp2"
    assert len(list((tmp_path / "out" / "_ledger" / "unit-a").iterdir())) == 1


def test_forget_removes_unit(ledger) -> None:
    ledger.commit("unit-a", "fp1", {})
    ledger.forget("unit-a")
    assert "unit-a" not in ledger.committed()


def test_no_temp_files_left(ledger, tmp_path) -> None:
    ledger.commit("unit-a", "fp1", {})
    names = [p.name for p in (tmp_path / "out").rglob("*")]
    assert not [n for n in names if n.startswith(".tmp")]


def test_claim_refuses_other_stack(ledger) -> None:
    ledger.claim({"stack_fingerprint": "aaa", "dtype": "float32", "granularity": "document"})
    ledger.claim({"stack_fingerprint": "aaa", "dtype": "float32", "granularity": "document"})
    with pytest.raises(OutputMismatchError) as caught:
        ledger.claim({"stack_fingerprint": "bbb", "dtype": "float32", "granularity": "document"})
    assert "'aaa'" in str(caught.value) and "'bbb'" in str(caught.value) and "--overwrite" in str(caught.value)
    assert json.loads(json.dumps(ledger.manifest()))["stack_fingerprint"] == "aaa"
