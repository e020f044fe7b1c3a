"""Ray job entrypoints: ``ray job submit ... -- python -m jobs.<name> ...`` runs them on a cluster's head.

- ``jobs.embed_corpus CONFIG``: embed (or resume, or refresh) a corpus; exit code says how it went.
- ``jobs.nightly_refresh CONFIG --index INDEX``: refresh run, then incremental index update, then one
  JSON line for the scheduler.
- ``jobs.build_index OUTPUT INDEX``: build or update the vector index from an output.

They are thin: the work is ``pipeline.run.run`` and ``pipeline.index.build_index``, the same code the
``corpus-embed`` command runs, so a job behaves exactly like the command on a laptop.
"""
