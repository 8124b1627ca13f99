"""Artifacts against PyTorch and the training preprocessing: eval accuracy, agreement, bench parity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ghostnet_edge.cli import main as cli_main
from ghostnet_edge.errors import GhostEdgeError
from ghostnet_edge.runtime.bench import BenchConfig, bench
from ghostnet_edge.runtime.evaluate import evaluate_artifact, topk_hits
from ghostnet_edge.runtime.tiny_models import build_tiny_models, reference_logits

LIMIT = 60
PRE = {"input_size": [3, 32, 32], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
       "resize": {"shorter_side": 32, "interpolation": "bilinear"}}


@pytest.fixture(scope="session")
def tiny(cache_dir: Path) -> dict[str, Path]:
    return build_tiny_models(cache_dir / "runtime")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A random-init ghostnet_cifar_050 checkpoint and its ONNX export (the export stage's function)."""
    from ghostnet_edge.export.onnx.convert import export_onnx
    from ghostnet_edge.models import create_model
    from ghostnet_edge.models.checkpoint import save_checkpoint

    d = tmp_path_factory.mktemp("exported")
    model = create_model("ghostnet_cifar_050", seed=0).eval()
    ckpt = save_checkpoint(d / "ghostnet_cifar_050.pt", model, {"model": "ghostnet_cifar_050"})
    export_onnx(model, (3, 32, 32), d / "ghostnet_cifar_050.onnx", metadata={"ghostedge.model": "ghostnet_cifar_050"})
    return {"ckpt": Path(ckpt), "onnx": d / "ghostnet_cifar_050.onnx"}


def with_manifest(src: Path, folder: Path) -> Path:
    """Copy an artifact into an export-like folder whose manifest.json carries the preprocessing."""
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / src.name
    dst.write_bytes(src.read_bytes())
    (folder / "manifest.json").write_text(json.dumps({"source": {"model": "tiny"}, "preprocessing": PRE}))
    return dst


def reference_top1(limit: int) -> tuple[float, np.ndarray]:
    """Top-1 of the NumPy reference network on the same images, preprocessed by the data stage."""
    from ghostnet_edge.data.datasets import open_dataset
    from ghostnet_edge.runtime.artifacts import find_preprocess

    ds = open_dataset("digits", "val", spec=find_preprocess(PRE)).subset(limit, seed=0)
    x, y = ds.load_batch(range(len(ds)))
    logits = reference_logits(x)
    return 100.0 * topk_hits(logits, y, 1) / len(y), logits.argmax(1)


def test_topk_hits() -> None:
    logits = np.array([[0.1, 0.9, 0.0], [0.8, 0.05, 0.15], [0.2, 0.3, 0.5]])
    labels = np.array([1, 2, 0])
    assert topk_hits(logits, labels, 1) == 1 and topk_hits(logits, labels, 2) == 2 and topk_hits(logits, labels, 9) == 3


@pytest.mark.parametrize("name", ["tiny_fp32.tflite", "tiny_fp32.onnx"])
def test_eval_fp32_artifact_matches_the_reference_network(tiny: dict[str, Path], tmp_path: Path, name: str) -> None:
    art = with_manifest(tiny[name], tmp_path / "export")
    res = evaluate_artifact(art, "digits", split="val", limit=LIMIT, batch_size=16)
    expected, _ = reference_top1(LIMIT)
    assert res["n"] == LIMIT and res["split"] == "val"
    assert res["top1"] == pytest.approx(expected)            # same images, same preprocessing, same answer
    assert res["top1"] <= res["top5"] <= 100.0
    assert res["preprocess"]["mean"] == PRE["mean"] and res["agreement_with_reference"] is None


def test_eval_int8_tflite_dequantises_with_its_own_parameters(tiny: dict[str, Path], tmp_path: Path) -> None:
    art = with_manifest(tiny["tiny_int8.tflite"], tmp_path / "export")
    res = evaluate_artifact(art, "digits", limit=LIMIT)
    expected, _ = reference_top1(LIMIT)
    assert res["precision"] == "int8" and res["runtime"] == "litert"
    assert abs(res["top1"] - expected) <= 100.0 * 3 / LIMIT     # a few near-ties may flip under INT8


def test_eval_onnx_agrees_with_its_checkpoint(exported: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    rc = cli_main(["eval", str(exported["onnx"]), "--data", "digits", "--limit", "40", "--reference",
                   str(exported["ckpt"]), "--json", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["model"] == "ghostnet_cifar_050" and res["n"] == 40     # preprocessing from the model name
    assert res["agreement_with_reference"] >= 97.5                      # FP32 export: same top-1 (<= 1 tie flips)
    ckpt_res = evaluate_artifact(exported["ckpt"], "digits", limit=40)  # the training stage's evaluation
    assert ckpt_res["format"] == "torch" and ckpt_res["n"] == 40
    assert abs(ckpt_res["top1"] - res["top1"]) <= 2.5


def test_bench_torch_eager_and_parity(exported: dict[str, Path]) -> None:
    cfg = BenchConfig(warmup=1, min_runs=5, min_seconds=0.1, remeasure=0, reference=str(exported["ckpt"]),
                      parity_samples=3)
    onnx_res, torch_res = bench([exported["onnx"], exported["ckpt"]], "host", cfg)
    assert torch_res.format == "torch" and torch_res.runtime == "torch" and torch_res.status == "ok"
    assert torch_res.latency_ms["n"] >= 5 and torch_res.input_shape == [1, 3, 32, 32]
    assert onnx_res.model == "ghostnet_cifar_050"           # from the ONNX metadata
    for r in (onnx_res, torch_res):
        assert r.parity["n"] == 3 and r.parity["top1_agreement"] == 1.0
        assert r.parity["max_abs_diff"] < 1e-3
    assert torch_res.parity["max_abs_diff"] == 0.0           # the reference itself, same inputs


def test_eval_without_preprocessing_is_refused(tiny: dict[str, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    lone = tmp_path / "lone.onnx"
    lone.write_bytes(tiny["tiny_fp32.onnx"].read_bytes())
    with pytest.raises(GhostEdgeError, match="cannot tell how images must be preprocessed"):
        evaluate_artifact(lone, "digits", limit=10)
    assert cli_main(["eval", str(lone), "--data", "digits", "--limit", "10"]) == 2
    assert "--model" in capsys.readouterr().err
    # Naming the model supplies the preprocessing (ghostnet_cifar_050: 3x32x32 like the tiny net).
    res = evaluate_artifact(lone, "digits", limit=10, model="ghostnet_cifar_050")
    assert res["n"] == 10
    assert cli_main(["eval", str(lone), "--data", str(tmp_path / "no_such_data"), "--model",
                     "ghostnet_cifar_050"]) == 2
