#!/usr/bin/env bash
# Idempotent set-up: creates .venv/ in the repo root and installs the project with its extras.
# torch is installed first, pinned, so that pip never pulls a multi-GB CUDA build on CPU machines
# (set CORPUS_EMBED_TORCH to choose another torch requirement, e.g. a CUDA build on GPU machines).
# Re-running is cheap: the install is skipped while pyproject.toml is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TORCH="${CORPUS_EMBED_TORCH:-torch==2.13.0}"
stamp=".venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)"
if [ -f "$stamp" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "$TORCH"
.venv/bin/python -m pip install --quiet -e '.[test,bench]'
rm -f .venv/.installed-*
touch "$stamp"
