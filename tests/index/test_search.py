"""Search embeds the query with the index's own stack (the packaged MiniLM here) and refuses any other."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from actors.embedder import TextEmbedder
from pipeline.cli import main
from pipeline.index import Searcher, StackMismatchError, build_index
from tests.conftest import demo_documents
from tests.index.fake_output import DEFAULT_STACK, FakeOutput, clustered_vectors


@pytest.fixture(scope="module")
def embedder() -> TextEmbedder:
    return TextEmbedder(DEFAULT_STACK, "mean")


def test_a_different_stack_fingerprint_is_refused(tmp_path: Path, embedder: TextEmbedder, capsys) -> None:
    output = FakeOutput(tmp_path / "out", embedder.dim, stack_fingerprint="0" * 32)
    output.commit("a", ["a:0", "a:1"], clustered_vectors(2, embedder.dim, 1))
    index = str(tmp_path / "index")
    build_index(output.url, index, "flat")
    with pytest.raises(StackMismatchError) as refused:
        Searcher(index)
    assert "0" * 32 in str(refused.value) and embedder.fingerprint() in str(refused.value)
    assert main(["search", index, "anything"]) == 2
    err = capsys.readouterr().err
    assert "0" * 32 in err and "model files" in err


def test_search_finds_the_document_by_its_own_text(tmp_path: Path, embedder: TextEmbedder, capsys) -> None:
    docs = demo_documents()[:20]
    vectors, _ = embedder.embed_documents([doc["text"] for doc in docs])
    output = FakeOutput(tmp_path / "out", embedder.dim, stack_fingerprint=embedder.fingerprint())
    output.commit("a", [doc["id"] for doc in docs[:12]], vectors[:12])
    output.commit("b", [doc["id"] for doc in docs[12:]], vectors[12:])
    index = str(tmp_path / "index")
    assert main(["index", "build", output.url, index, "--quiet"]) == 0
    assert "holds 20 vectors of dim 384" in capsys.readouterr().out

    target = docs[15]
    assert main(["search", index, target["text"], "-k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["rank", "score", "id"]
    rank, score, doc_id = lines[1].split()[:3]
    assert (rank, doc_id) == ("1", target["id"]) and float(score) > 0.999
    assert len(lines) == 4

    assert main(["search", index, target["text"], "-k", "2", "--json"]) == 0
    hits = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [hit["rank"] for hit in hits] == [1, 2] and hits[0]["id"] == target["id"] and hits[0]["unit"] == "b"


def test_sentence_index_prints_snippets(tmp_path: Path, embedder: TextEmbedder, capsys) -> None:
    docs = demo_documents()[:6]
    results = embedder.embed_sentences([doc["text"] for doc in docs])
    ids, sentences, vectors = [], [], []
    for doc, result in zip(docs, results):
        for sentence, vector in zip(result.sentences, result.vectors):
            ids.append(doc["id"])
            sentences.append(sentence)
            vectors.append(vector)
    output = FakeOutput(tmp_path / "out", embedder.dim, granularity="sentence", stack_fingerprint=embedder.fingerprint())
    output.commit("a", ids, np.stack(vectors), texts=sentences)
    index = str(tmp_path / "index")
    build_index(output.url, index, "hnsw")
    hits = Searcher(index).search(sentences[4], k=2)
    assert hits[0].id == ids[4] and hits[0].text == sentences[4][:200] and hits[0].score > 0.999
    assert main(["search", index, sentences[4], "-k", "1"]) == 0
    out = capsys.readouterr().out
    assert "sent  text" in out and " ".join(sentences[4].split())[:60] in out


def test_index_side_never_imports_torch(tmp_path: Path) -> None:
    output = FakeOutput(tmp_path / "out", 8)
    output.commit("a", ["a:0", "a:1", "a:2"], clustered_vectors(3, 8, 1))
    code = ("import sys\nfrom pipeline.index import build_index, IndexReader\n"
            f"build_index({output.url!r}, {str(tmp_path / 'index')!r}, 'hnsw')\n"
            f"IndexReader({str(tmp_path / 'index')!r}).search_vectors([[1.0] * 8], 2)\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
