"""The CLI must start fast: no heavy framework may be imported to parse arguments or print help."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "tensorflow", "onnx", "onnxruntime", "ai_edge_litert", "tflite_runtime", "nncf",
         "matplotlib", "sklearn", "numpy")

_PROBE = r"""
import json, sys
from ghostnet_edge.cli import main
argv = json.loads(sys.argv[1])
try:
    main(argv)
except SystemExit:
    pass
mods = json.loads(sys.argv[2])
print("LOADED=" + json.dumps(sorted(m for m in mods if m in sys.modules)))
"""


def _loaded_after(argv: list[str]) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(argv), json.dumps(HEAVY)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("LOADED=")]
    assert line, f"probe failed: {out.stdout}\n{out.stderr}"
    return json.loads(line[-1].split("=", 1)[1])


def test_help_imports_no_heavy_framework() -> None:
    assert _loaded_after(["--help"]) == []


def test_every_subcommand_help_imports_no_heavy_framework() -> None:
    from ghostnet_edge.cli import _register_all, app

    _register_all()
    import typer.main

    names = sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    assert names, "no commands registered"
    for name in names:
        assert _loaded_after([name, "--help"]) == [], name


def test_unknown_command_exits_nonzero() -> None:
    from ghostnet_edge.cli import main

    assert main(["no-such-command"]) != 0
