#!/usr/bin/env bash
# Build (or check) the cached aarch64 sysroot + instruction-count plugin of the qemu-aarch64 target.
#
#   bash scripts/build_sysroot.sh            # quick no-op when the cache is current
#   bash scripts/build_sysroot.sh --force    # rebuild from scratch
#   bash scripts/build_sysroot.sh --no-apt   # never run apt-get/dpkg as root; print what to run instead
#
# Cache: ${GHOSTEDGE_CACHE:-$HOME/.cache/ghostedge}/sysroot-aarch64 (~300 MB) and .../qemu-plugin/.
# The work is done by ghostnet_edge/runtime/qemu/build.py (stdlib only), with the project's Python 3.11
# because it precompiles the guest's 3.11 bytecode.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3.11; fi
fi
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" exec "$PY" -m ghostnet_edge.runtime.qemu.build "$@"
