"""The names inside an output folder, in one place.

Everything but ``data/`` starts with ``_`` so that Parquet readers (pyarrow datasets, DuckDB
globs over ``data/``, polars) see exactly the committed vectors and nothing else.
"""
DATA_DIR = "data"              # data/<unit>/part-NNNNN.parquet: published vectors
REJECTS_DIR = "_rejects"       # _rejects/<unit>/part-NNNNN.parquet: rejected rows with reasons
LEDGER_DIR = "_ledger"         # _ledger/<unit>/<source-fingerprint>.json: commit records
RUNS_DIR = "_runs"             # _runs/<run-id>.json: one record per run
STAGING_DIR = "_staging"       # parts in flight and temp files; swept at every run's start and end
TEMP_DIR = f"{STAGING_DIR}/tmp"
MANIFEST = "_manifest.json"    # the output's stack fingerprint, dtype, granularity, dim
