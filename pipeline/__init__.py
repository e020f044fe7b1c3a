"""Driver side of corpus-embed: config, shard discovery, readers, progress ledger, Parquet sink, run loop.

Nothing in this package imports torch: the driver plans and commits, the actors embed.
"""
