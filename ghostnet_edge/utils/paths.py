"""Where ghostedge keeps what it can rebuild, and where its child processes find it (standard library only)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_home() -> Path:
    """``$GHOSTEDGE_CACHE`` or ``~/.cache/ghostedge``, read at call time so tests can redirect it: the
    calibration tensors and ranges, converted models, data set caches, tool venvs and the ARM sysroot
    all live below it."""
    return Path(os.environ.get("GHOSTEDGE_CACHE") or Path.home() / ".cache" / "ghostedge")


def package_env() -> dict[str, str]:
    """This process's environment with this checkout first on ``PYTHONPATH``: a child started as
    ``python -m ghostnet_edge...`` imports the same package as its parent, installed or not."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env
