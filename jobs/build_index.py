"""``python -m jobs.build_index OUTPUT INDEX [--kind flat|hnsw|ivfpq]``: build or update the vector index.

The same as ``corpus-embed index build``, as a job entrypoint: incremental (only units committed
since the last build are read; replaced and deleted units are removed), FAISS work in-process on the
node the job's driver runs on. Exit codes: 0 done, 2 the output or index cannot be used as asked
(the reason is the last line printed, as ``corpus-embed`` prints it).
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from pipeline.errors import UserError, one_line
from pipeline.index.commands import add_build_arguments, run_build


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.build_index", description=__doc__.split("\n")[0].strip("`"))
    add_build_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_build(args)
    except UserError as error:   # the index's errors, unusable storage: one line, last, exit 2
        sys.stdout.flush()
        print(f"corpus-embed: {one_line(error, 4000)}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
