#!/usr/bin/env bash
# Install everything ghostedge needs on a fresh Debian 12 / Python 3.11 machine, idempotently.
#
#   bash scripts/setup.sh            # system packages, virtualenv in .venv, aarch64 sysroot
#
# Environment:
#   GHOSTEDGE_VENV=DIR         put the virtualenv elsewhere (.venv becomes a link to it; CI uses a cache)
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
  say "system packages present (ssh, sshd, qemu-aarch64)"
fi

# --- 2. the virtualenv
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
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
if [ "$(cat "$stamp_file" 2>/dev/null)" != "$stamp" ]; then
  say "installing Python packages (pinned by constraints.txt; torch==2.13.0 CPU, no CUDA)"
  "$VENV/bin/python" -m pip install -q "${find_links[@]}" -c constraints.txt -e ".[all]"
  echo "$stamp" > "$stamp_file"
else
  # Same dependencies: only (re)point the editable install at this checkout.
  if ! "$VENV/bin/python" - "$ROOT" <<'PY' 2>/dev/null
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

# --- 3. the aarch64 sysroot for the qemu-aarch64 target (cached outside the checkout)
if [ "${GHOSTEDGE_SKIP_SYSROOT:-0}" = 1 ]; then
  say "skipping the aarch64 sysroot (GHOSTEDGE_SKIP_SYSROOT=1)"
elif [ -f scripts/build_sysroot.sh ]; then
  bash scripts/build_sysroot.sh
fi

say "done in $(( $(date +%s) - t0 )) s; run commands with .venv/bin/ghostedge (or: source .venv/bin/activate)"
