"""The README's main job: its defaults, and a real run with given checkpoints (``--weights``).

The full default quickstart trains and exports six models (minutes), so the test here swaps in given
checkpoints and PyTorch only: the same code path (``run_curve``), a real evaluation and a real host
measurement, in seconds. Its full run time is measured and stated in docs/results/README.md.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from ghostnet_edge.cli import main
from ghostnet_edge.pipeline.quickstart import (
    QUICKSTART_FORMATS,
    QUICKSTART_MODELS,
    QUICKSTART_SEEDS,
    quickstart,
    quickstart_config,
)

MODEL = "ghostnet_cifar_050"


def test_default_config_is_the_readme_job(tmp_path: Path) -> None:
    cfg = quickstart_config(out=tmp_path / "out", targets=["host"])
    assert cfg.data == "digits" and cfg.work == tmp_path / "out"
    assert any(m.startswith("ghostnet_") for m in cfg.models) and cfg.models == QUICKSTART_MODELS
    assert len(cfg.seeds) >= 2 and cfg.seeds == QUICKSTART_SEEDS
    assert set(cfg.formats) == {"torch", "onnx", "onnx-int8", "tflite", "tflite-int8"} == set(QUICKSTART_FORMATS)
    assert cfg.targets == ("host",) and cfg.weights is None and cfg.calib is None  # calibrated on the train split
    assert cfg.command == "ghostedge quickstart --out " + str(tmp_path / "out") + " --target host"


@pytest.fixture(scope="module")
def given_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two seeded checkpoints in the ``<model>/seed_<s>/`` layout (random weights: nothing is trained here)."""
    from ghostnet_edge.models import create_model
    from ghostnet_edge.models.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("weights")
    for seed in (0, 1):
        net = create_model(MODEL, seed=seed)
        save_checkpoint(root / MODEL / f"seed_{seed}" / "model.pt", net,
                        {"seed": seed, "class_names": [str(i) for i in range(10)]})
    return root


def test_quickstart_with_given_weights_writes_summary_and_reuses(given_weights: Path, tmp_path: Path) -> None:
    out = tmp_path / "qs"
    logs: list[str] = []
    res = quickstart(out=out, weights=given_weights, targets=["host"], seeds=(0, 1), models=(MODEL,),
                     formats=("torch",), log=logs.append)
    assert res.curve.counters.get("train_given") == 2 and "train_done" not in res.curve.counters
    assert not res.curve.failures
    summary = res.summary.read_text()
    assert "curve.png" in summary and "points.csv" in summary and f"| {MODEL} | torch | host |" in summary
    rows = list(csv.DictReader((out / "points.csv").open()))
    assert len(rows) == 1 and rows[0]["n_seeds"] == "2" and rows[0]["status"] == "ok"
    assert 0.0 <= float(rows[0]["acc_mean"]) <= 100.0
    for name in ("curve.png", "curve.svg", "curve.md"):
        assert (out / name).is_file()
    again = quickstart(out=out, weights=given_weights, targets=["host"], seeds=(0, 1), models=(MODEL,),
                       formats=("torch",), log=logs.append)
    assert again.curve.counters.get("eval_reused") == 2 and again.curve.counters.get("bench_reused") == 1
    assert "eval_done" not in again.curve.counters and "bench_done" not in again.curve.counters


def test_quickstart_cli_missing_weights_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["quickstart", "--out", str(tmp_path / "o"), "--weights", str(tmp_path / "nope"), "--target", "host"])
    err = capsys.readouterr().err
    assert rc == 2 and "error: --weights" in err and "hint:" in err
