#!/usr/bin/env bash
# Build the peers' virtualenv (bench/.peers-venv) that holds flair 0.15.1, which needs
# transformers < 5 and so cannot share the project's environment (DESIGN.md §10).
# torch==2.13.0 goes in first so that pip keeps the CPU build instead of pulling a CUDA one.
# Idempotent: a venv that finished installing (marker file .ready) is left as is.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${PEERS_VENV:-$HERE/.peers-venv}"
PY="${PYTHON:-python3}"

if [ -f "$VENV/.ready" ] && [ -x "$VENV/bin/python" ]; then
    echo "peers venv ready: $VENV"
    exit 0
fi
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
"$VENV/bin/pip" install --quiet "torch==2.13.0"
"$VENV/bin/pip" install --quiet "flair==0.15.1" "torch==2.13.0"
"$VENV/bin/python" -c "import flair, torch, transformers; print('peers venv ready:', '$VENV', 'flair', flair.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)"
touch "$VENV/.ready"
