#!/usr/bin/env bash
# Idempotent set-up: creates .venv/ in the repo root, installs torch, then the project with its extras.
#
# torch comes first, pinned, so that `pip install -e .` (which asks only for torch>=2.4) never swaps it.
# Which build:
#   - no NVIDIA GPU (`nvidia-smi -L` lists none): the CPU build, torch==2.13.0+cpu. It is taken from
#     wherever pip already looks when a CPU build is there (a local wheel folder or mirror), else from
#     PyTorch's CPU wheel index. The CUDA build that PyPI serves for Linux is several GB and useless here.
#   - an NVIDIA GPU: the CUDA 12.8 build from PyTorch's cu128 index (the build of infra/Dockerfile), else
#     the CUDA build PyPI serves for Linux.
#   - macOS and other non-Linux systems: torch==2.13.0 as pip finds it (those builds have no CUDA).
# Overrides (either or both; then nothing else is tried, and the GPU check only decides the warnings):
#   CORPUS_EMBED_TORCH        the torch requirement or a wheel path/URL (default torch==2.13.0), e.g.
#                             'torch==2.13.0+cu126'; name the build (+cpu, +cu126) to switch an existing
#                             .venv, since an installed 2.13.0 of another build satisfies plain ==2.13.0
#   CORPUS_EMBED_TORCH_INDEX  the index to install it from (pip --index-url), e.g.
#                             https://download.pytorch.org/whl/cu126
# After installing it prints the torch version and build, and warns loudly when the build does not fit
# the machine (a CUDA build without a GPU, or a CPU build beside a GPU).
#
# Re-running is cheap: nothing is installed while pyproject.toml and the torch choice (GPU or not, the
# two overrides) are unchanged; it prints one line saying what is installed.
# `bash scripts/setup.sh --dry-run` prints the choice and the install commands and changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION="2.13.0"
CUDA_TAG="cu128"
PYTORCH_INDEX="https://download.pytorch.org/whl"
PYTHON="${PYTHON:-python3}"
DRY_RUN=0
[ "${1:-}" = "--dry-run" ] && DRY_RUN=1

say() { echo "setup: $*"; }
sha1() { if command -v sha1sum >/dev/null 2>&1; then sha1sum "$@"; else shasum -a 1 "$@"; fi | cut -c1-12; }
shout() {
  {
    echo "setup: ############################################################################"
    for line in "$@"; do echo "setup: WARNING: $line"; done
    echo "setup: ############################################################################"
  } >&2
}

# --- the machine -------------------------------------------------------------------------------------
gpu=""
if command -v nvidia-smi >/dev/null 2>&1; then
  # A wedged driver can hang nvidia-smi: give it 30 s where coreutils' timeout exists.
  gpu="$($(command -v timeout >/dev/null 2>&1 && echo timeout 30) nvidia-smi -L 2>/dev/null | grep -m1 '^GPU ' || true)"
fi
system="$(uname -s)"

# --- the choice: attempts, each "requirement|index|why"; the first that installs wins ---------------
attempts=()
if [ -n "${CORPUS_EMBED_TORCH:-}${CORPUS_EMBED_TORCH_INDEX:-}" ]; then
  requirement="${CORPUS_EMBED_TORCH:-torch==$TORCH_VERSION}"
  attempts+=("$requirement|${CORPUS_EMBED_TORCH_INDEX:-}|set by CORPUS_EMBED_TORCH / CORPUS_EMBED_TORCH_INDEX")
  expect="chosen"
elif [ -n "$gpu" ]; then
  attempts+=("torch==$TORCH_VERSION+$CUDA_TAG|$PYTORCH_INDEX/$CUDA_TAG|CUDA build from PyTorch's $CUDA_TAG index")
  # PyPI's Linux wheel of 2.13.0 is a CUDA 13 build; the "!=" keeps a local CPU wheel from shadowing it.
  attempts+=("torch==$TORCH_VERSION,!=$TORCH_VERSION+cpu||CUDA build as pip's usual sources serve it for Linux")
  expect="cuda"
elif [ "$system" != "Linux" ]; then
  attempts+=("torch==$TORCH_VERSION||the $system build (no CUDA) from pip's usual sources")
  expect="cpu"
else
  attempts+=("torch==$TORCH_VERSION+cpu||CPU build already where pip looks (local wheels or a mirror)")
  attempts+=("torch==$TORCH_VERSION+cpu|$PYTORCH_INDEX/cpu|CPU build from PyTorch's CPU index")
  attempts+=("torch==$TORCH_VERSION||LAST RESORT: no CPU build could be had; pip's default, possibly a multi-GB CUDA build")
  expect="cpu"
fi
if [ -n "$gpu" ]; then machine="NVIDIA GPU found (${gpu%% (UUID*})"; else machine="no NVIDIA GPU (nvidia-smi lists none)"; fi

key="$(sha1 pyproject.toml)-$(printf '%s\n' "$TORCH_VERSION" "${gpu:+gpu}" "$system" \
  "${CORPUS_EMBED_TORCH:-}" "${CORPUS_EMBED_TORCH_INDEX:-}" | sha1)"
stamp=".venv/.installed-$key"

if [ "$DRY_RUN" = 1 ]; then
  say "$machine; torch: the ${expect} build; stamp $stamp ($([ -f "$stamp" ] && echo present || echo absent))"
  for attempt in "${attempts[@]}"; do
    IFS='|' read -r requirement index why <<<"$attempt"
    say "would try: pip install '$requirement'${index:+ --index-url $index}   # $why"
  done
  say "then: pip install -e '.[test,bench]'"
  exit 0
fi

if [ -f "$stamp" ]; then
  say "up to date: $(cat "$stamp")"
  exit 0
fi

# --- install -------------------------------------------------------------------------------------------
say "$machine: installing the $expect build of torch"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip=(.venv/bin/python -m pip)
"${pip[@]}" install --quiet --upgrade pip

log="$(mktemp)"
report="$(mktemp)"
trap 'rm -f "$log" "$report"' EXIT
chosen=""
for attempt in "${attempts[@]}"; do
  IFS='|' read -r requirement index why <<<"$attempt"
  args=(install --quiet --report "$report" "$requirement")
  # PyTorch's index may be unreachable (firewalls, air-gapped mirrors): fail fast there and move on.
  [ -n "$index" ] && args+=(--index-url "$index" --timeout 20 --retries 1)
  say "trying: pip install '$requirement'${index:+ --index-url $index}   # $why"
  if "${pip[@]}" "${args[@]}" >"$log" 2>&1; then
    chosen="$requirement${index:+ from $index}"
    break
  fi
  say "  did not install: $(grep -m1 -E '^ERROR' "$log" || tail -n1 "$log")"
done
if [ -z "$chosen" ]; then
  cat "$log" >&2
  shout "no torch build could be installed; set CORPUS_EMBED_TORCH (a requirement or wheel path)" \
        "and/or CORPUS_EMBED_TORCH_INDEX (an index URL) and run again"
  exit 1
fi
origin="$(.venv/bin/python - "$report" <<'EOF'
import json, os, sys
from urllib.parse import unquote, urlparse
for item in json.load(open(sys.argv[1])).get("install", []):
    if item["metadata"]["name"].lower() == "torch":
        url = urlparse(item["download_info"]["url"])
        print(("local file " if url.scheme == "file" else "downloaded ") + os.path.basename(unquote(url.path)))
        break
else:
    print("already installed")
EOF
)"
say "torch: $chosen ($origin)"

"${pip[@]}" install --quiet -e '.[test,bench]'

# --- check what is installed (after the project, so a swapped torch would show) ------------------------
info="$(.venv/bin/python -c 'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available())')"
read -r version cuda available <<<"$info"
if [ "$cuda" = "None" ]; then build="cpu build"; else build="cuda $cuda build"; fi
summary="torch $version ($build); $machine; chosen: $chosen; project installed with extras test,bench"
if [ -z "$gpu" ] && [ "$cuda" != "None" ]; then
  shout "torch $version is a CUDA $cuda build, but this machine has no NVIDIA GPU: it runs on the CPU" \
        "and takes several GB. For the CPU build, set CORPUS_EMBED_TORCH='torch==$TORCH_VERSION+cpu' (or the" \
        "path of such a wheel) and CORPUS_EMBED_TORCH_INDEX=$PYTORCH_INDEX/cpu (or a mirror of it), and run again."
  summary="$summary; WARNING: CUDA build on a machine without GPU"
elif [ -n "$gpu" ] && [ "$cuda" = "None" ]; then
  shout "torch $version is a CPU build, but this machine has an NVIDIA GPU that it will not use. For a CUDA" \
        "build: rm -rf .venv and run again without overrides, or set CORPUS_EMBED_TORCH='torch==$TORCH_VERSION+$CUDA_TAG'" \
        "and CORPUS_EMBED_TORCH_INDEX=$PYTORCH_INDEX/$CUDA_TAG (or another cuXXX) and run again."
  summary="$summary; WARNING: CPU build on a machine with a GPU"
elif [ -n "$gpu" ] && [ "$available" != "True" ]; then
  shout "torch $version is a CUDA $cuda build but torch.cuda.is_available() is False:" \
        "the NVIDIA driver may be older than CUDA $cuda needs (nvidia-smi shows the highest CUDA it supports)."
  summary="$summary; WARNING: CUDA not available to torch"
fi
say "installed $summary"
rm -f .venv/.installed-*
echo "$summary" >"$stamp"
