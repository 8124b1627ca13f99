"""``ghostedge export`` on the command line: the summary table, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ghostnet_edge.cli import main

REPO = Path(__file__).resolve().parents[1]
MODEL = "ghostnet_cifar_050"


@pytest.fixture(scope="module")
def photos(imagenet_samples: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve real ImageNet photos (odd sizes, grayscale ones included) for a 32x32 model."""
    import shutil

    root = tmp_path_factory.mktemp("photos")
    for p in sorted(imagenet_samples.glob("*.JPEG"))[:12]:
        shutil.copy(p, root / p.name)
    return root


@pytest.fixture(autouse=True)
def _private_cache(private_cache: Path) -> None:
    """Every test here uses a cache of its own session (see conftest)."""


def test_export_prints_the_summary_table(photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "exp"
    rc = main(["export", "--model", MODEL, "--calib", str(photos), "--out", str(out), "--formats", "onnx",
               "--num-calib", "8", "--num-verify", "4", "--threads", "1", "--calib-method", "percentile"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    for text in ("model.onnx", "model_int8.onnx", "max |diff| to PyTorch", "top-1 agreement", str(out)):
        assert text in captured.out, text
    assert "calibrated on 8 images" in captured.out and "checked on 4 held-out images" in captured.out
    assert "random weights" in captured.err  # the --model warning comes first, on stderr
    m = json.loads((out / "manifest.json").read_text())
    assert m["config"]["calib_method"] == "percentile" and m["calibration"]["count"] == 8
    assert m["verification"]["count"] == 4


def test_export_command_process_writes_what_an_in_process_export_writes(photos: Path, tmp_path: Path) -> None:
    """``ghostedge export`` in its own process (PyTorch imported without running its meta kernels, see
    export/torch_import.py) against the same export in this process, where PyTorch is fully imported."""
    args = ["export", "--model", MODEL, "--calib", str(photos), "--formats", "onnx", "--num-calib", "8",
            "--num-verify", "4", "--threads", "1", "--no-cache"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "ghostnet_edge", *args, "--out", str(tmp_path / "own")],
                          capture_output=True, text=True, env=env, timeout=300, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-1500:]
    assert main([*args, "--out", str(tmp_path / "here")]) == 0
    for name in ("model.onnx", "model_int8.onnx", "quant_report.json"):
        assert (tmp_path / "own" / name).read_bytes() == (tmp_path / "here" / name).read_bytes(), name


def test_existing_folder_is_refused_then_forced(photos: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "exp"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    args = ["export", "--model", MODEL, "--calib", str(photos), "--out", str(out), "--formats", "onnx",
            "--no-int8", "--num-verify", "2", "--threads", "1"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "error: output folder" in err and "hint: pass --force" in err
    assert (out / "keep.txt").exists()
    assert main(args + ["--force"]) == 0
    assert not (out / "keep.txt").exists() and (out / "model.onnx").is_file()


@pytest.mark.parametrize("extra, message", [
    (["--formats", "onnx,coreml"], "unknown export format"),
    (["--act-type", "int4"], "unknown activation type"),
    (["--io-dtype", "int16"], "input/output type"),
    (["--input-size", "33"], "multiple"),
])
def test_bad_options_exit_2_with_one_message(extra: list[str], message: str, photos: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "exp"
    rc = main(["export", "--model", MODEL, "--calib", str(photos), "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "hint:" in err
    assert "Traceback" not in err and not out.exists()


def test_module_entry_point_reports_a_missing_checkpoint(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "ghostnet_edge", "export", str(tmp_path / "missing.pt"),
                           "--calib", str(tmp_path), "--out", str(tmp_path / "exp")],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "error: checkpoint" in proc.stderr and "does not exist" in proc.stderr and "hint:" in proc.stderr
    assert not (tmp_path / "exp").exists()
