"""The driver never imports torch: planning and committing stay light and GPU-free."""
from __future__ import annotations

import subprocess
import sys


def test_driver_modules_do_not_import_torch(tmp_path) -> None:
    code = (
        "import sys\n"
        "import pipeline.cli, pipeline.run, pipeline.status, pipeline.ray_pipeline, pipeline.sink\n"
        "from actors.stack.fingerprint import stack_fingerprint\n"
        "from pipeline.config import parse_config\n"
        f"c = parse_config({{'input': {{'path': {str(tmp_path)!r}}}, 'output': {{'path': {str(tmp_path)!r}}}}})\n"
        "stack_fingerprint(c.stack_spec(), c.pooling)\n"
        "assert 'torch' not in sys.modules, 'torch was imported by the driver'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
