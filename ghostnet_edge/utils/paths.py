"""Where ghostedge keeps what it can rebuild, and where its child processes find it (standard library only)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_home() -> Path:
    """``$GHOSTEDGE_CACHE`` or ``~/.cache/ghostedge``, read at call time so tests can redirect it: the
    calibration tensors and ranges, converted models, data set caches, tool venvs and the ARM sysroot
    all live below it."""
    return Path(os.environ.get("GHOSTEDGE_CACHE") or Path.home() / ".cache" / "ghostedge")


def _package_root() -> str:
    return str(Path(__file__).resolve().parents[2])


def package_env() -> dict[str, str]:
    """This process's environment with this checkout first on ``PYTHONPATH``: a child started with
    :func:`module_argv` (or a script of this package) imports the same package as its parent, installed
    or not."""
    env = dict(os.environ)
    root = _package_root()
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def module_argv(module: str, *args: str, python: str | None = None) -> list[str]:
    """The command line that runs ``module`` as ``python -m module args...`` would, but importing this
    package whatever the working directory: ``python -m`` puts the working directory ahead of
    ``PYTHONPATH`` on ``sys.path``, so a child started inside another copy of ghostedge (a source
    checkout of another version) would import that copy, and the parent and child would disagree."""
    import sys

    code = (f"import runpy, sys; sys.path.insert(0, {_package_root()!r}); "
            f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)")
    return [python or sys.executable, "-c", code, *args]
