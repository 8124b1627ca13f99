"""ghostedge installs into the Python a user has: pip resolves ``ghostedge[export,nncf]`` on 3.10-3.13.

A real install on a Python other than 3.11 would download a CUDA build of torch (several GB; the CPU
wheel on disk is cp311), so the check is pip's own resolver in ``--dry-run`` mode, in a fresh virtualenv
of each interpreter found. An interpreter that is absent, or a machine without access to the package
index, skips with the reason.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
KEY_PACKAGES = ("torch", "numpy", "tensorflow", "onnxruntime", "onnx", "ai-edge-litert", "onnxsim", "nncf")


def _python(minor: str) -> str | None:
    candidates = sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{minor}.*/bin/python")), reverse=True)
    candidates += [p for p in (shutil.which(f"python{minor}"),) if p]
    for cand in candidates:
        ok = subprocess.run([cand, "-c", "import sys, venv; print('%d.%d' % sys.version_info[:2])"],
                            capture_output=True, text=True)
        if ok.returncode == 0 and ok.stdout.strip() == minor:
            return cand
    return None


@pytest.mark.slow
@pytest.mark.parametrize("minor", ["3.10", "3.11", "3.12", "3.13"])
def test_pip_resolves_the_export_stack(minor: str, tmp_path: Path) -> None:
    py = _python(minor)
    if py is None:
        pytest.skip(f"python{minor} not found (pyenv versions or PATH)")
    venv = tmp_path / "venv"
    subprocess.run([py, "-m", "venv", str(venv)], check=True, capture_output=True)
    report = tmp_path / "report.json"
    done = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--dry-run", "--quiet",
                           "--disable-pip-version-check", "--report", str(report), f"{REPO}[export,nncf]"],
                          capture_output=True, text=True, timeout=900)
    if done.returncode != 0 and ("Could not fetch URL" in done.stderr or "NewConnectionError" in done.stderr
                                 or "Temporary failure in name resolution" in done.stderr):
        pytest.skip(f"the package index is not reachable: {done.stderr.strip().splitlines()[-1]}")
    assert done.returncode == 0, done.stderr[-2000:]
    resolved = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.loads(report.read_text())["install"]}
    missing = [p for p in KEY_PACKAGES if p not in resolved]
    assert not missing, f"not resolved on {minor}: {missing}"
    print(f"python {minor}: " + ", ".join(f"{p} {resolved[p]}" for p in KEY_PACKAGES), file=sys.stderr)
