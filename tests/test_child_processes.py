"""The export's child processes (TFLite converter, image prefetch, host runner) import their parent's package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import ghostnet_edge
from ghostnet_edge.utils.paths import module_argv, package_env


def test_a_child_imports_this_package_even_from_inside_another_copy(tmp_path: Path) -> None:
    # `python -m` would put the working directory, and the copy of ghostnet_edge in it, first on sys.path.
    other = tmp_path / "ghostnet_edge"
    other.mkdir()
    (other / "__init__.py").write_text("raise SystemExit('imported the copy in the working directory')\n")
    (other / "probe.py").write_text("")
    argv = module_argv("ghostnet_edge.__main__", "--version")
    done = subprocess.run(argv, cwd=tmp_path, env=package_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert ghostnet_edge.__version__ in done.stdout + done.stderr
    plain = subprocess.run([sys.executable, "-m", "ghostnet_edge", "--version"], cwd=tmp_path, env=package_env(),
                           capture_output=True, text=True, timeout=60)
    assert "copy in the working directory" in plain.stderr  # the trap is real: plain -m falls into it


def test_arguments_reach_the_module(tmp_path: Path) -> None:
    argv = module_argv("json.tool", "--sort-keys")
    done = subprocess.run(argv, input='{"b": 1, "a": 2}', cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.index('"a"') < done.stdout.index('"b"')
