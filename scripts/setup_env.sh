#!/usr/bin/env bash
# One idempotent set-up: creates .venv with every pinned dependency and installs this package in editable mode.
# Each step is skipped when its inputs have not changed since it last succeeded (a hash stamp in .venv/.stamps),
# so a second run costs well under a second. A new step is a function plus one `run_step NAME INPUTS... -- FUNC` line.
#
#   scripts/setup_env.sh            set up or refresh .venv
#   ST4R_SKIP_TORCH=1 ...           keep the torch already in .venv (e.g. a CUDA build installed by hand)
#   ST4R_SKIP_ROS=1 ...             leave out the ROS 2 wheels (a machine with a real ROS 2 install: source it instead)
#   ST4R_PYTHON=python3.11 ...      interpreter used to create the venv
#   ST4R_VENV=/tmp/v ...            venv location (default .venv; used to time a clean install)
#
# ROS 2 comes from PyPI wheels (requirements/ros.txt); the venv root is the ROS install prefix. Source
# scripts/ros_env.sh for shells and CMake; Python processes in the venv find the libraries by themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="${ST4R_VENV:-$ROOT/.venv}"
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
  local t0=$SECONDS
  "$@"
  mkdir -p "$STAMPS"
  echo "$want" > "$STAMPS/$name"
  log "step '$name' done in $((SECONDS - t0)) s"
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

# ROS 2 Kilted wheels (runtime + rosidl/ament build tools), pinned; base.txt constrains the shared packages.
install_ros() {
  "$VENV/bin/pip" install --disable-pip-version-check -q -r requirements/ros.txt -c requirements/base.txt
  fix_ros_cmake_paths
}

# The wheels' CMake export files name the wheel build host's Python and NumPy include dirs; CMake rejects imported
# targets whose include dirs do not exist, so point them at this venv's. Idempotent: a rewritten file no longer
# contains the old prefix. Safe to call again from later steps (e.g. after a message build installs more files).
fix_ros_cmake_paths() {
  local py_inc np_inc old_py=/opt/python/cp311-cp311/include/python3.11
  local old_np=/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include
  py_inc=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  np_inc=$("$VENV/bin/python" -c 'import numpy; print(numpy.get_include())')
  [ -f "$py_inc/Python.h" ] || log "warning: no Python.h in $py_inc (install python3-dev to build messages)"
  local files
  mapfile -t files < <(grep -rlF --include='*.cmake' -e "$old_py" -e "$old_np" "$VENV/share" || true)
  if [ "${#files[@]}" -gt 0 ]; then
    sed -i -e "s|$old_py|$py_inc|g" -e "s|$old_np|$np_inc|g" "${files[@]}"
    log "rewrote build-host include paths in ${#files[@]} CMake files"
  fi
}

# msg/ is its own ROS package (st4rtrack_msgs, ament_cmake; st4rtrack_ros itself is ament_python). Build it with
# plain CMake into the venv prefix, so `from st4rtrack_msgs.msg import Track3DArray` works in the venv. The build
# folder lives in the venv (.venv/.build), the generated Python package lands in its site-packages.
build_messages() {
  local py_inc build="$VENV/.build/st4rtrack_msgs"
  py_inc=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  if [ ! -f "$py_inc/Python.h" ]; then
    log "error: $py_inc/Python.h is missing; the message build needs the Python headers (python3-dev)"
    return 1
  fi
  command -v cmake >/dev/null || { log "error: cmake is missing (apt-get install cmake)"; return 1; }
  fix_ros_cmake_paths
  rm -rf "$build"; mkdir -p "$build"
  (
    # shellcheck source=ros_env.sh
    ST4R_VENV="$VENV" source scripts/ros_env.sh
    cmake -S msg -B "$build" -DCMAKE_INSTALL_PREFIX="$VENV" -DCMAKE_PREFIX_PATH="$VENV" \
      -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release >"$build.log" 2>&1 \
      && cmake --build "$build" -j "$(nproc)" >>"$build.log" 2>&1 \
      && cmake --install "$build" >>"$build.log" 2>&1
  ) || { log "error: message build failed; see $build.log"; tail -n 30 "$build.log" >&2; return 1; }
  "$VENV/bin/python" -c 'from st4rtrack_msgs.msg import Track3DArray, TrackerStatus' \
    || { log "error: st4rtrack_msgs built but does not import"; return 1; }
}

install_package() {
  "$VENV/bin/pip" install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
}

# Shared libraries the pip wheels expect from the system: Open3D's wheel links libusb-1.0.
system_packages() {
  if ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then return 0; fi
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    log "installing libusb-1.0-0 (needed by open3d)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libusb-1.0-0 >/dev/null
  else
    log "error: libusb-1.0 is missing and cannot be installed here; run: sudo apt-get install libusb-1.0-0"
    return 1
  fi
}

system_packages
make_venv
run_step python-deps requirements/base.txt requirements/dev.txt -- install_python_deps
if [ "${ST4R_SKIP_ROS:-0}" != "1" ]; then
  run_step ros requirements/ros.txt requirements/base.txt -- install_ros
  run_step messages msg/package.xml msg/CMakeLists.txt msg/msg/*.msg requirements/ros.txt -- build_messages
fi
run_step package setup.py -- install_package
log "ready: $VENV"
