"""``python -m jobs.build_index OUTPUT INDEX [--kind flat|hnsw|ivfpq]``: build or update the vector index.

The same as ``corpus-embed index build``, as a job entrypoint: incremental (only units committed
since the last build are read; replaced and deleted units are removed), FAISS work in-process on the
node the job's driver runs on. Exit codes: 0 done, 2 the output or index cannot be used as asked.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from pipeline.index.commands import add_build_arguments, run_build


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.build_index", description=__doc__.split("\n")[0].strip("`"))
    add_build_arguments(parser)
    return run_build(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
