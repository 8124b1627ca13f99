"""What a user of these tools expects from a command line: --version, -h, units, familiar flag names,
separate default folders, and no framework chatter on the terminal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("GHOSTEDGE_VERBOSE", None)
    return subprocess.run([sys.executable, "-m", "ghostnet_edge", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout, stdin=subprocess.DEVNULL)


def test_version_and_short_help() -> None:
    from ghostnet_edge import __version__

    done = _cli("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"ghostedge {__version__}"
    for args in (("-h",), ("export", "-h"), ("bench", "-h")):
        done = _cli(*args)
        assert done.returncode == 0 and "Usage:" in done.stdout, (args, done.stderr)


def test_export_options_exist_as_hints_name_them() -> None:
    out = _cli("export", "--help").stdout
    assert "--no-simplify" in out and "--opset" in out
    from ghostnet_edge.export.onnx import convert

    assert "--no-simplify" in Path(convert.__file__).read_text()   # the hint's flag is real


def test_benchmark_model_flag_names_are_accepted() -> None:
    out = _cli("bench", "--help").stdout
    for flag in ("--num_threads", "--warmup_runs", "--num_runs"):
        assert flag in out


def test_each_command_has_its_own_default_folder() -> None:
    """export, curve and quickstart write to different folders by default, so one never replaces another's."""
    import typer

    from ghostnet_edge import cli

    try:
        import click
    except ImportError:   # typer >= 0.2x vendors click
        from typer import _click as click

    cli._register_all()
    group = typer.main.get_command(cli.app)
    ctx = click.Context(group)
    defaults = {}
    for name, option in (("export", "out"), ("curve", "work"), ("quickstart", "out")):
        command = group.get_command(ctx, name)
        defaults[name] = str(next(p for p in command.params if p.name == option).default)
    assert defaults == {"export": "ghostedge-export", "curve": "runs/curve", "quickstart": "ghostedge-out"}


def test_sizes_are_binary_units() -> None:
    from ghostnet_edge.cli.export import _size

    assert _size(5 * 2**20) == "5.00 MiB" and _size(3 * 2**10) == "3.0 KiB"


@pytest.mark.slow
def test_export_prints_no_tensorflow_chatter(tmp_path: Path) -> None:
    """No cuInit / cuDNN / absl lines from TensorFlow's import on a plain export (``--verbose`` shows them)."""
    images = tmp_path / "imgs" / "a"
    images.mkdir(parents=True)
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(images / f"{i}.png")
    done = _cli("export", "--model", "ghostnet_cifar_050", "--calib", str(images.parent), "--no-int8",
                "--formats", "onnx,tflite", "--num-verify", "4", "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr[-1500:]
    noise = [ln for ln in done.stderr.splitlines()
             if any(w in ln for w in ("cuInit", "cuDNN", "cuFFT", "cuBLAS", "W0000", "E0000", "I0000",
                                      "computation_placer", "oneDNN custom operations",
                                      "XNNPACK delegate"))]
    assert noise == [], noise


def test_export_ends_with_what_an_app_needs() -> None:
    from types import SimpleNamespace

    from ghostnet_edge.cli.export import app_lines

    report = SimpleNamespace(
        out_dir=Path("exp"), artifacts=[SimpleNamespace(name="model_fp32.tflite", format="tflite"),
                                        SimpleNamespace(name="model_int8.tflite", format="tflite")],
        manifest={"preprocessing": {"input_size": [3, 32, 32]},
                  "tflite_int8_io": {"input": {"dtype": "int8", "scale": 0.016, "zero_point": -5}}})
    first, second = app_lines(report)
    assert "exp/model_int8.tflite" in first and "labels.txt" in first
    assert "int8 [1, 32, 32, 3] NHWC RGB" in second and "round(x / 0.016) - 5" in second
