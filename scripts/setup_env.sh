#!/usr/bin/env bash
# One idempotent set-up: creates .venv with every pinned dependency and installs this package in editable mode.
# Each step is skipped when its inputs have not changed since it last succeeded (a hash stamp in .venv/.stamps),
# so a second run costs well under a second. Later steps (ROS 2 wheels, message build) add a function below.
#
#   scripts/setup_env.sh            set up or refresh .venv
#   ST4R_SKIP_TORCH=1 ...           keep the torch already in .venv (e.g. a CUDA build installed by hand)
#   ST4R_PYTHON=python3.11 ...      interpreter used to create the venv
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
PY="${ST4R_PYTHON:-python3}"
STAMPS="$VENV/.stamps"

log() { printf '[setup] %s\n' "$*"; }

# run_step NAME INPUT_FILES... -- COMMAND...: run COMMAND unless the hash of the inputs matches the stamp.
run_step() {
  local name=$1; shift
  local inputs=()
  while [ "$1" != "--" ]; do inputs+=("$1"); shift; done
  shift
  local want
  want=$(cat "${inputs[@]}" | sha256sum | cut -d' ' -f1)
  if [ -f "$STAMPS/$name" ] && [ "$(cat "$STAMPS/$name")" = "$want" ]; then
    return 0
  fi
  log "step '$name' ..."
  "$@"
  mkdir -p "$STAMPS"
  echo "$want" > "$STAMPS/$name"
  log "step '$name' done"
}

make_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV with $($PY --version)"
    "$PY" -m venv "$VENV"
  fi
}

install_python_deps() {
  local reqs=(-r requirements/base.txt -r requirements/dev.txt)
  if [ "${ST4R_SKIP_TORCH:-0}" = "1" ]; then
    grep -v '^torch==' requirements/base.txt > "$VENV/.base-no-torch.txt"
    reqs=(-r "$VENV/.base-no-torch.txt" -r requirements/dev.txt)
  fi
  "$VENV/bin/pip" install --disable-pip-version-check -q "${reqs[@]}"
}

install_package() {
  "$VENV/bin/pip" install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
}

make_venv
run_step python-deps requirements/base.txt requirements/dev.txt -- install_python_deps
run_step package setup.py -- install_package
log "ready: $VENV"
