"""The names inside an output folder, in one place.

Everything but ``data/`` starts with ``_`` so that Parquet readers (pyarrow datasets, DuckDB
globs over ``data/``, polars) see exactly the committed vectors and nothing else.
"""
DATA_DIR = "data"                    # data/<unit>/part-NNNNN.parquet: published vectors
REJECTS_DIR = "_rejects"             # _rejects/<unit>/part-NNNNN.parquet: rejected rows of committed units
FAILED_DIR = "_failed"               # _failed/<unit>/: a unit that failed its last attempt (failure.json, rejects)
LEDGER_DIR = "_ledger"               # _ledger/<unit>@<source>-<settings>.json: commit records
LEDGER_DIGEST = "_ledger.digest.parquet"  # every record's content as of the last run
RUNS_DIR = "_runs"                   # _runs/<run-id>.json: one record per run
STAGING_DIR = "_staging"             # _staging/<run-id>/: parts in flight; a run sweeps dead runs' staging
LEASE = "_lease.json"                # the running run's lease (one writer per output)
MANIFEST = "_manifest.json"          # the output's stack fingerprint, dtype, granularity, dim, id type
LEDGER_LAYOUT = 2                    # the version of this layout, recorded in the manifest

# Everything a run writes, in the order --overwrite deletes it: the commit records first, so that
# a deletion killed half-way never leaves a unit that looks committed without its data.
OUTPUT_NAMES = (LEDGER_DIR, LEDGER_DIGEST, MANIFEST, DATA_DIR, REJECTS_DIR, FAILED_DIR, RUNS_DIR, STAGING_DIR)
