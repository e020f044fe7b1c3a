"""bench/gpu.sh without CUDA: it says so, makes a smoke pass of every row and prints the whole table."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

# The table's rows, in order (sections: ceiling, encoder at 128 and 512 pieces, MiniLM, char-LM).
ENCODER_ROWS = [
    "ours TransformerWordEmbeddings, in-process",
    "ours sentence_transformer kind, in-process",
    "corpus-embed run, 1 GPU actor (steady state)",
    "SentenceTransformer.encode, batch 32",
    "SentenceTransformer.encode, batch = our token budget",
]
EXPECTED_ROWS = [
    "matmul bf16 (the ceiling)",
    *ENCODER_ROWS,
    *ENCODER_ROWS,
    "ours sentence_transformer kind, in-process",
    "corpus-embed run, 1 GPU actor (steady state)",
    "SentenceTransformer.encode, batch 32",
    "ours FlairEmbeddings",
]


def test_cpu_smoke_pass_prints_every_row(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("with CUDA the script measures for minutes; this test is its smoke pass")
    env = {**os.environ, "PYTHON": sys.executable, "GPU_BENCH_TIMEOUT": "400"}
    env.pop("RAY_ADDRESS", None)
    result = subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh"), "--budget", "0.3", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=480, env=env, cwd=str(ROOT))
    output = result.stdout
    assert result.returncode == 0, output[-4000:] + result.stderr[-4000:]
    assert output.startswith("no CUDA: "), output[:500]

    lines = output.splitlines()
    position = 0
    for name in EXPECTED_ROWS:   # every row, in order, each with a figure (no "—" for its rate)
        found = next((i for i in range(position, len(lines)) if lines[i].startswith(f"  {name}  ")), None)
        assert found is not None, f"row {name!r} missing after line {position}:\n{output}"
        assert "error" not in lines[found] and "skipped" not in lines[found], lines[found]
        position = found + 1

    (saved,) = tmp_path.glob("gpu-*-cpu-smoke.json")
    data = json.loads(saved.read_text())
    assert data["smoke"] is True and data["device"]["cuda"] is False
    assert [row["name"] for row in data["rows"]] == EXPECTED_ROWS
    assert all(row["status"] == "ok" and row["rate"] > 0 for row in data["rows"]), [
        (row["name"], row["status"]) for row in data["rows"]]
    assert all(row["share_of_matmul"] > 0 for row in data["rows"])
