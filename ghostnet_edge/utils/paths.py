"""Where ghostedge keeps what it can rebuild (standard library only)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_home() -> Path:
    """``$GHOSTEDGE_CACHE`` or ``~/.cache/ghostedge``, read at call time so tests can redirect it: the
    calibration tensors and ranges, converted models, data set caches, tool venvs and the ARM sysroot
    all live below it."""
    return Path(os.environ.get("GHOSTEDGE_CACHE") or Path.home() / ".cache" / "ghostedge")
