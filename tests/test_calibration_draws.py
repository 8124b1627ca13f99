"""INT8 accuracy over calibration draws (`ghostedge export --calib-seeds`), and repeatable INT8 evaluation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ghostnet_edge.data.datasets import CIFAR10_CLASSES
from ghostnet_edge.errors import DataError, GhostEdgeError
from ghostnet_edge.pipeline.calibration_draws import (
    DrawsConfig,
    parse_int_list,
    run_draws,
    summarize,
    validate,
)

MODEL = "ghostnet_cifar_050"
CLASSES = list(CIFAR10_CLASSES)   # the data stage's own list
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _private_cache(private_cache: Path) -> None:
    """Every test here uses a cache of its own session (see conftest)."""


@pytest.fixture(scope="module")
def train_images(cifar_images) -> Path:
    return cifar_images(3, "train")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ghostnet_edge.models import create_model, save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(path, create_model(MODEL, seed=0), {"class_names": CLASSES, "seed": 0})
    return path


def test_parse_lists() -> None:
    assert parse_int_list("5", "--calib-seeds", count_means_range=True) == (0, 1, 2, 3, 4)
    assert parse_int_list("3,7", "--calib-seeds", count_means_range=True) == (3, 7)
    assert parse_int_list("32, 128,512", "--calib-sizes") == (32, 128, 512)
    with pytest.raises(GhostEdgeError):
        parse_int_list("a,b", "--calib-sizes")


def test_summary_pairs_each_draw_with_fp32() -> None:
    rows = [{"format": "tflite", "num_calib": 8, "seed": s, "top1": t, "delta_vs_fp32": t - 50.0}
            for s, t in ((0, 49.0), (1, 50.0), (2, 51.0))]
    (s,) = summarize(rows)
    assert s["draws"] == 3 and s["top1"]["mean"] == pytest.approx(50.0) and s["top1"]["std"] == pytest.approx(1.0)
    assert s["delta_vs_fp32"]["mean"] == pytest.approx(0.0) and s["worst_delta"] == pytest.approx(-1.0)


def test_bad_requests_are_refused_before_exporting(ckpt: Path, train_images: Path, tmp_path: Path) -> None:
    base = dict(checkpoint=ckpt, calib=train_images, eval_data="cifar10", out=tmp_path / "o")
    with pytest.raises(GhostEdgeError, match="give no spread"):
        validate(DrawsConfig(**base, seeds=(0,)))
    with pytest.raises(DataError, match="calibration images asked for"):
        validate(DrawsConfig(**base, seeds=(0, 1), sizes=(500,)))
    with pytest.raises(DataError, match="overlap"):
        validate(DrawsConfig(**{**base, "eval_data": str(train_images.parent)}, seeds=(0, 1), sizes=(8,)))
    with pytest.raises(GhostEdgeError, match="trained checkpoint"):
        validate(DrawsConfig(**{**base, "checkpoint": tmp_path / "missing.pt"}, seeds=(0, 1), sizes=(8,)))
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_draws_export_score_and_resume(ckpt: Path, train_images: Path, tmp_path: Path) -> None:
    cfg = DrawsConfig(checkpoint=ckpt, calib=train_images, eval_data="cifar10", out=tmp_path / "draws",
                      seeds=(0, 1), sizes=(8,), eval_limit=40, num_verify=4, threads=1)
    result = run_draws(cfg, log=lambda s: None)
    assert {(r["format"], r["seed"]) for r in result["draws"]} == {("onnx", 0), ("onnx", 1), ("tflite", 0), ("tflite", 1)}
    fp32 = result["fp32"]["top1"]
    for r in result["draws"]:
        assert r["n"] == 40 and r["delta_vs_fp32"] == pytest.approx(r["top1"] - fp32)
    assert [s["format"] for s in result["summary"]] == ["onnx", "tflite"]
    saved = json.loads((tmp_path / "draws" / "calibration_draws.json").read_text())
    assert saved["draws"] == result["draws"]
    md = (tmp_path / "draws" / "calibration_draws.md").read_text()
    assert "mean +- std" in md and "worst delta" in md
    # Different seeds really draw different calibration images.
    lists = [json.loads((tmp_path / "draws" / f"draw-n8-s{s}" / "manifest.json").read_text())["calibration"]["list_sha256"]
             for s in (0, 1)]
    assert lists[0] != lists[1]
    # A re-run reuses every export and score.
    stamp = (tmp_path / "draws" / "draw-n8-s0" / "manifest.json").stat().st_mtime_ns
    again = run_draws(cfg, log=lambda s: None)
    assert again["draws"] == result["draws"]
    assert (tmp_path / "draws" / "draw-n8-s0" / "manifest.json").stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_int8_onnx_evaluation_is_repeatable(ckpt: Path, train_images: Path, tmp_path: Path) -> None:
    """The same INT8 ONNX file gives the same logits: first run vs later runs, and across processes."""
    from ghostnet_edge.export.pipeline import ExportConfig, export_artifacts
    from ghostnet_edge.runtime.backends import load_runner

    out = tmp_path / "exp"
    export_artifacts(ExportConfig(checkpoint=ckpt, calib=train_images, out=out, formats=("onnx",), num_calib=12,
                                  num_verify=4, threads=2))
    x = np.random.default_rng(5).standard_normal((48, 3, 32, 32)).astype(np.float32)
    runner = load_runner(out / "model_int8.onnx", runtime="onnxruntime", threads=2)
    runs = [runner.run(x) for _ in range(3)]
    assert all(np.array_equal(runs[0], r) for r in runs[1:])
    np.save(tmp_path / "x.npy", x)
    code = ("import sys, numpy as np; from ghostnet_edge.runtime.backends import load_runner; "
            "r = load_runner(sys.argv[1], runtime='onnxruntime', threads=2); "
            "np.save(sys.argv[3], r.run(np.load(sys.argv[2])))")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for i in range(2):
        subprocess.run([sys.executable, "-c", code, str(out / "model_int8.onnx"), str(tmp_path / "x.npy"),
                        str(tmp_path / f"y{i}.npy")], check=True, env=env, capture_output=True)
        assert np.array_equal(np.load(tmp_path / f"y{i}.npy"), runs[0])
