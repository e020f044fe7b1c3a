#!/usr/bin/env bash
# The demo: embeds examples/corpus with the packaged MiniLM on a local Ray into out/demo/, prints the
# run summary and the nearest neighbours of a query. Run it twice: the second run has nothing to do.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAY_AUTH_MODE=disabled
exec .venv/bin/python examples/demo.py "$@"
