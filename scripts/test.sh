#!/usr/bin/env bash
# The whole test suite, slow end-to-end tests included (they start Ray, an S3 server, kill processes).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAY_AUTH_MODE=disabled
exec .venv/bin/python -m pytest tests "$@"
