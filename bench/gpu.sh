#!/usr/bin/env bash
# The GPU table in one run, under a hard time limit (default 450 s, under 8 minutes in all):
#
#   bash bench/gpu.sh [--budget SECONDS] [--out DIR] [--shape base|tiny]
#
# a bf16 matmul ceiling; a BERT-base-sized random encoder at 128 and 512 pieces (ours in-process,
# `corpus-embed run` with one GPU actor, SentenceTransformer.encode: tokens/s and share of the
# ceiling); MiniLM docs/s; a hidden-2048 Flair char-LM's chars/s. Without CUDA it says
# "no CUDA: ..." and makes a smoke pass of every row in a minute or two. Results:
# bench/results/gpu-<date>-<device>.json and the table on stdout. Arguments go to
# `python -m bench.gpu` (see its --help). Environment: PYTHON (default: .venv/bin/python, made by
# scripts/setup.sh first when missing, as scripts/demo.sh does; the set-up is not part of the limit),
# GPU_BENCH_TIMEOUT (the hard limit in seconds).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
    if [ ! -x "$ROOT/.venv/bin/python" ]; then
        bash scripts/setup.sh || { echo "bench/gpu.sh: scripts/setup.sh failed; set PYTHON to a ready interpreter" >&2; exit 2; }
    fi
    PY="$ROOT/.venv/bin/python"
fi
LIMIT="${GPU_BENCH_TIMEOUT:-450}"
# Rows not started by this many seconds are skipped, so the table is printed before the kill.
DEADLINE=$(( LIMIT > 120 ? LIMIT - 45 : LIMIT * 2 / 3 ))
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false HF_HUB_DISABLE_PROGRESS_BARS=1
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}"
unset RAY_ADDRESS   # always a local Ray of its own, on this machine's GPU
timeout --signal=TERM --kill-after=10 "$LIMIT" "$PY" -m bench.gpu --deadline "$DEADLINE" "$@"
rc=$?
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    echo "bench/gpu.sh: stopped at its ${LIMIT} s limit (rc $rc); rows not done are marked skipped" >&2
fi
exit "$rc"
