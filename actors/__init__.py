"""Worker side of corpus-embed: the embedding actor and the model stack it holds.

Nothing here talks to the progress ledger; the driver (``pipeline``) owns that.
"""
