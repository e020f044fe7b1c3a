"""End-to-end tests share the top-level fixtures (tests/conftest.py)."""
from tests.conftest import DEMO_CORPUS, demo_documents, write_shards  # noqa: F401
