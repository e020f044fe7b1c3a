"""The driver never imports torch: planning and committing stay light and GPU-free."""
from __future__ import annotations

import subprocess
import sys


def test_driver_modules_do_not_import_torch(tmp_path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_text('{"text": "one"}\n')
    code = (
        "import sys\n"
        "import pipeline.cli, pipeline.run, pipeline.status, pipeline.ray_pipeline, pipeline.sink, pipeline.plan\n"
        "from actors.stack.fingerprint import stack_fingerprint\n"
        "from pipeline.config import parse_config\n"
        "from pipeline.plan import make_plan\n"
        f"c = parse_config({{'input': {{'path': {str(tmp_path / 'in')!r}}}, 'output': {{'path': {str(tmp_path / 'out')!r}}}}})\n"
        "stack_fingerprint(c.specs, c.token_pooling)\n"
        "plan = make_plan(c)\n"
        "assert len(plan.decision.add) == 1, plan.lines()\n"
        "assert 'torch' not in sys.modules, 'torch was imported by the driver'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "out").exists(), "planning wrote to the output"


def test_parquet_over_python_file_objects_opens_through_storage() -> None:
    """``storage.parquet_file`` turns pyarrow's pre-buffering off for fsspec handles, whose pyarrow
    threads could otherwise abort an interpreter at exit; no module opens one another way (an
    in-memory ``pa.BufferReader`` is a native file and may)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    offenders = []
    for folder in ("pipeline", "actors", "jobs", "infra"):
        for source in sorted((root / folder).rglob("*.py")):
            if source == root / "pipeline" / "storage.py":
                continue
            for number, line in enumerate(source.read_text().splitlines(), 1):
                if re.search(r"ParquetFile\((?!pa\.BufferReader\()", line) and not line.lstrip().startswith(("#", '"')):
                    offenders.append(f"{source.relative_to(root)}:{number}: {line.strip()}")
    assert offenders == [], "open Parquet through pipeline.storage.parquet_file:\n" + "\n".join(offenders)
