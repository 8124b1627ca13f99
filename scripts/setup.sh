#!/usr/bin/env bash
# Install everything ghostedge needs on a fresh Debian/Ubuntu machine (Python 3.10-3.13; 3.11 is the
# tested lock), idempotently.
#
#   bash scripts/setup.sh            # system packages, virtualenv in .venv, aarch64 sysroot
#
# Environment:
#   GHOSTEDGE_VENV=DIR         put the virtualenv elsewhere (.venv becomes a link to it; CI uses a cache)
#   PYTHON=python3.X           the interpreter for a new virtualenv (default: 3.11, else 3.12, 3.13, 3.10)
#   GHOSTEDGE_SKIP_APT=1       do not touch system packages (no root)
#   GHOSTEDGE_SKIP_SYSROOT=1   skip the emulated-ARM sysroot (qemu-aarch64 target unavailable)
#
# A second run with nothing changed takes a few seconds: the virtualenv carries a stamp of
# constraints.txt + pyproject.toml and is only re-resolved when they change.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
t0=$(date +%s)
say() { printf '[setup] %s\n' "$*"; }

# --- 1. system packages: OpenSSH (the ssh target's tests start a real sshd), qemu-user (emulated ARM)
need_pkgs=()
command -v ssh >/dev/null 2>&1 || need_pkgs+=(openssh-client)
[ -x /usr/sbin/sshd ] || need_pkgs+=(openssh-server)
command -v qemu-aarch64 >/dev/null 2>&1 || need_pkgs+=(qemu-user)
# The C client in examples/ (built and run by the tests on x86-64 and, cross-compiled, on emulated ARM)
command -v gcc >/dev/null 2>&1 || need_pkgs+=(gcc)
command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || need_pkgs+=(gcc-aarch64-linux-gnu)
# ...and its C library headers, only a recommendation of the cross compiler (apt here skips those).
[ -e /usr/aarch64-linux-gnu/include/stdio.h ] || need_pkgs+=(libc6-dev-arm64-cross)
# tflite-support's metadata library (the test that reads our metadata with it) links libusb-1.0.
{ ldconfig -p 2>/dev/null || true; } | grep -q 'libusb-1\.0\.so\.0' || need_pkgs+=(libusb-1.0-0)
for hdr in jpeglib.h:libjpeg62-turbo-dev png.h:libpng-dev zlib.h:zlib1g-dev; do
  [ -e "/usr/include/${hdr%%:*}" ] || need_pkgs+=("${hdr##*:}")
done
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  if [ "${GHOSTEDGE_SKIP_APT:-0}" = 1 ]; then
    say "skipping apt (GHOSTEDGE_SKIP_APT=1); missing: ${need_pkgs[*]}"
  elif [ "$(id -u)" = 0 ]; then
    say "installing Debian packages: ${need_pkgs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  elif command -v sudo >/dev/null 2>&1; then
    say "installing Debian packages with sudo: ${need_pkgs[*]}"
    sudo apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  else
    say "cannot install ${need_pkgs[*]} (not root, no sudo): the ssh and qemu targets' tests will skip"
  fi
else
  say "system packages present (ssh, sshd, qemu-aarch64, gcc, aarch64 cross gcc and libc headers, libusb, libjpeg/libpng/zlib headers)"
fi
# The emulated-ARM client links arm64 libjpeg/libpng/zlib, fetched with `apt-get download PKG:arm64`.
if [ "$(id -u)" = 0 ] && [ "${GHOSTEDGE_SKIP_APT:-0}" != 1 ] && command -v dpkg >/dev/null 2>&1 \
   && ! dpkg --print-foreign-architectures | grep -qx arm64; then
  say "adding the arm64 package architecture (download only: nothing arm64 is installed)"
  dpkg --add-architecture arm64
  apt-get update -qq || say "apt-get update failed; the emulated-ARM client test will skip"
fi

# --- 2. the virtualenv: a supported Python (3.10-3.13), 3.11 first (the lock and torch's CPU wheel are cp311)
py_ok() {  # prints "3.X" when $1 runs and is a supported version
  "$1" -c 'import sys; v = sys.version_info[:2]; assert (3, 10) <= v <= (3, 13); print("%d.%d" % v)' 2>/dev/null
}
PY="" PYV=""
for cand in ${PYTHON:-} python3.11 "$(pyenv root 2>/dev/null)/versions/3.11"*/bin/python \
            python3.12 python3.13 python3.10 python3; do
  [ -n "$cand" ] || continue
  if v=$(py_ok "$cand"); then PY=$cand PYV=$v; break; fi
  [ -n "${PYTHON:-}" ] && [ "$cand" = "$PYTHON" ] && say "PYTHON=$PYTHON is not a Python 3.10-3.13; looking for another"
done
if [ -z "$PY" ]; then
  say "error: no supported Python found (ghostedge needs 3.10, 3.11, 3.12 or 3.13; 3.11 is the tested lock)"
  say "hint: install python3.11 (Debian/Ubuntu: apt-get install python3.11 python3.11-venv, or pyenv install 3.11)"
  say "      and run again, or point PYTHON=/path/to/python3.X at one"
  exit 1
fi
say "using $PY (Python $PYV)"
VENV=${GHOSTEDGE_VENV:-$ROOT/.venv}
if [ "$VENV" != "$ROOT/.venv" ]; then
  mkdir -p "$(dirname "$VENV")"
  if [ -e "$ROOT/.venv" ] && [ ! -L "$ROOT/.venv" ]; then rm -rf "$ROOT/.venv"; fi
  ln -sfn "$VENV" "$ROOT/.venv"
fi
if [ ! -x "$VENV/bin/python" ]; then
  say "creating virtualenv $VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel
fi
# torch's CPU wheel lies on disk; pip also finds it through PIP_FIND_LINKS where that is set.
find_links=()
[ -d /opt/wheels ] && find_links=(--find-links /opt/wheels)
stamp_file="$VENV/.ghostedge-stamp"
stamp=$(cat constraints.txt pyproject.toml | sha256sum | cut -d' ' -f1)
venv_pyv=$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$(cat "$stamp_file" 2>/dev/null)" != "$stamp" ]; then
  if [ "$venv_pyv" = 3.11 ]; then
    say "installing Python packages (the lock in constraints.txt; torch==2.13.0 CPU, no CUDA)"
    lock=(-c constraints.txt)
  else
    # constraints.txt is resolved on 3.11; elsewhere pyproject's ranges resolve afresh.
    say "installing Python packages for Python $venv_pyv from pyproject.toml's ranges (constraints.txt is the 3.11 lock)"
    say "note: torch for Python $venv_pyv comes from PyPI: a CUDA build of several GB unless a CPU build is installed first"
    lock=()
  fi
  "$VENV/bin/python" -m pip install -q "${find_links[@]}" "${lock[@]}" -e ".[all]"
  if [ "$venv_pyv" = 3.11 ]; then
    # A virtualenv made from an older lock keeps packages the new one dropped (an old interpreter built
    # for numpy 1, a converter's pins): remove whatever the lock does not list.
    extra=$("$VENV/bin/python" - <<'PY'
import re
from importlib.metadata import distributions
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
locked = {norm(line.split("==")[0]) for line in open("constraints.txt") if "==" in line and not line.startswith("#")}
keep = locked | {"pip", "setuptools", "wheel", "ghostedge"}
print(" ".join(sorted({d.metadata["Name"] for d in distributions() if norm(d.metadata["Name"]) not in keep})))
PY
)
    if [ -n "$extra" ]; then
      say "removing packages the lock no longer lists: $extra"
      "$VENV/bin/python" -m pip uninstall -q -y $extra
    fi
  fi
  echo "$stamp" > "$stamp_file"
else
  # Same dependencies: only (re)point the editable install at this checkout. The check runs isolated
  # (-I): otherwise Python puts the current folder first on sys.path, finds this checkout's package
  # there and passes, while the installed `ghostedge` command still points at another (deleted) clone
  # that shared the virtualenv.
  if ! "$VENV/bin/python" -I - "$ROOT" <<'PY' 2>/dev/null
import pathlib, sys
import ghostnet_edge
sys.exit(0 if pathlib.Path(ghostnet_edge.__file__).resolve().parents[1] == pathlib.Path(sys.argv[1]).resolve() else 1)
PY
  then
    say "pointing the editable install at $ROOT"
    "$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e .
  fi
  say "Python packages up to date"
fi

# The editable install leaves the package's bytecode to be written by its first import, which never
# happens where PYTHONDONTWRITEBYTECODE is set (as in many containers): every command, and each helper
# process of an export, would then compile the package from source again. Up-to-date files are skipped.
"$VENV/bin/python" -m compileall -q -j 0 ghostnet_edge >/dev/null || say "note: could not write ghostnet_edge's bytecode"

# --- 3. the aarch64 sysroot for the qemu-aarch64 target (cached outside the checkout)
if [ "${GHOSTEDGE_SKIP_SYSROOT:-0}" = 1 ]; then
  say "skipping the aarch64 sysroot (GHOSTEDGE_SKIP_SYSROOT=1)"
elif [ -f scripts/build_sysroot.sh ]; then
  bash scripts/build_sysroot.sh
fi

say "done in $(( $(date +%s) - t0 )) s; run commands with .venv/bin/ghostedge (or: source .venv/bin/activate)"
