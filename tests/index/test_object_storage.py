"""An index kept in object storage (moto's S3 server over HTTP): built, updated and searched in place."""
from __future__ import annotations

import json
from pathlib import Path

from pipeline.cli import main
from pipeline.config import StorageConfig
from pipeline.index import IndexReader, build_index
from tests.index.fake_output import FakeOutput, clustered_vectors


def test_build_update_and_read_an_index_on_s3(tmp_path: Path, s3_endpoint: str, s3_bucket: str, capsys) -> None:
    storage = StorageConfig(endpoint_url=s3_endpoint)
    output = FakeOutput(tmp_path / "out", 16)
    output.commit("a", [f"a:{i}" for i in range(300)], clustered_vectors(300, 16, 1))
    output.commit("b", [f"b:{i}" for i in range(200)], clustered_vectors(200, 16, 2))
    index = f"{s3_bucket}/indexes/demo"
    assert main(["index", "build", output.url, index, "--kind", "hnsw", "--endpoint-url", s3_endpoint,
                 "--json", "--quiet"]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (first["count"], first["units_added"], first["kind"]) == (500, ["a", "b"], "hnsw")

    output.delete("a")
    output.commit("c", [f"c:{i}" for i in range(100)], clustered_vectors(100, 16, 3))
    second = build_index(output.url, index, storage=storage)
    assert (second.units_added, second.units_removed, second.count) == (["c"], ["a"], 300)

    reader = IndexReader(index, storage)
    assert sorted(reader.live_ids()) == output.current_ids()
    ids, vectors = output.current_vectors()
    assert [hits[0].id for hits in reader.search_vectors(vectors[:20], 1)] == ids[:20]
    listed = sorted(path.split("/", 1)[1] for path in reader.folder.fs.find(reader.folder.root))
    assert listed == sorted(["indexes/demo/index.json", f"indexes/demo/{reader.meta.index_file}",
                             *[f"indexes/demo/{reader.meta.idmap_path(unit)}" for unit in ("b", "c")]])

    assert main(["index", "info", index, "--endpoint-url", s3_endpoint]) == 0
    assert "hnsw, 300 vectors of dim 16" in capsys.readouterr().out


def test_index_an_output_that_lives_on_s3(tmp_path: Path, s3_endpoint: str, s3_bucket: str) -> None:
    """The ledger names files by the path they were written under; the build follows the output's
    current location, so an output copied to a bucket indexes from there."""
    from pipeline.storage import Folder

    storage = StorageConfig(endpoint_url=s3_endpoint)
    local = FakeOutput(tmp_path / "out", 16, granularity="sentence")
    local.commit("a", [f"a:{i}" for i in range(120)], clustered_vectors(120, 16, 1), parts=3)
    remote = Folder(f"{s3_bucket}/out", storage)
    remote.fs.put(str(tmp_path / "out") + "/", remote.root + "/", recursive=True)
    summary = build_index(f"{s3_bucket}/out", f"{s3_bucket}/index", "flat", storage=storage)
    assert summary.count == 120
    reader = IndexReader(f"{s3_bucket}/index", storage)
    assert sorted(reader.live_ids()) == local.current_ids()
    hit = reader.search_vectors(local.units["a"][1][77], 1)[0][0]
    assert (hit.id, hit.sentence, hit.text) == ("a:77", 77 % 3, "a:77")
