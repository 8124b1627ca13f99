"""The committed CIFAR-10 reference networks, and the code that trains and records them.

The references (references/cifar10/NAME/model.safetensors) are the well-trained networks INT8 accuracy is
measured on; these tests check that they load like any checkpoint and still score what RUN.md says on
real test images, so a later change to a model's layers or to the preprocessing cannot silently break
them.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ghostnet_edge.data.loader import prefetch
from ghostnet_edge.errors import GhostEdgeError

REPO = Path(__file__).resolve().parents[1]
REFERENCES = sorted(p.parent for p in (REPO / "references" / "cifar10").glob("*/model.safetensors"))


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _final_top1(ref: Path) -> float:
    return json.loads((ref / "metrics.jsonl").read_text().splitlines()[-1])["val_top1"]


def test_a_ghostnet_and_a_mobilenetv3_reference_reach_85_percent():
    """The networks INT8 is judged on are well trained: at least 85 % top-1 on the 10,000 test images for
    a GhostNet and for the MobileNetV3 baseline (RUN.md of each says how)."""
    final = {p.name: _final_top1(p) for p in REFERENCES}
    assert max(v for k, v in final.items() if k.startswith("ghostnet_cifar")) >= 85.0, final
    assert max(v for k, v in final.items() if k.startswith("mobilenetv3")) >= 85.0, final


@pytest.mark.parametrize("ref", REFERENCES, ids=lambda p: p.name)
def test_reference_is_well_trained_and_loads_like_any_checkpoint(ref: Path, cifar_tar: Path, monkeypatch):
    """RUN.md's top-1 and the last line of metrics.jsonl agree, and 1,000 real test images
    (100 per class) score within a few points of it through ``ghostedge eval``'s code path."""
    from ghostnet_edge.train.evaluate import evaluate_checkpoint

    monkeypatch.setenv("GHOSTEDGE_CIFAR_TAR", str(cifar_tar))
    final = _final_top1(ref)
    assert final >= 80.0, f"{ref.name} is not a trained reference ({final} %)"
    assert f"**{final:.2f} %**" in (ref / "RUN.md").read_text()
    result = evaluate_checkpoint(ref / "model.safetensors", "cifar10", split="val", limit=1000)
    assert result["n"] == 1000
    # 1,000 images: a binomial standard error of about 1.1 points at 86 %
    assert abs(result["top1"] - final) < 4.0, (result["top1"], final)


def test_run_markdown_reports_the_final_epoch_not_the_best():
    record = _script("record_reference")
    history = [{"epoch": 1, "val_top1": 80.0, "val_top5": 98.0, "seconds": 60.0},
               {"epoch": 2, "val_top1": 86.5, "val_top5": 99.0, "seconds": 60.0},
               {"epoch": 3, "val_top1": 86.2, "val_top5": 99.1, "seconds": 60.0}]
    text = record.run_markdown("m", "ghostedge train --epochs 3", "abc123", "here", history)
    assert "**86.20 %**" in text and "best epoch 2 at 86.50 %" in text
    assert "3.0 min" in text and "`abc123`" in text


def test_epochs_fitted_to_a_budget_use_the_measured_speed():
    refs = _script("gpu_references")
    # 5,000 img/s -> a 10 s training epoch; the probe's val pass of 1,024 images took 0.2 s -> ~2 s for 10k
    probe = {"images_per_s": 5000.0, "seconds": 10240 / 5000.0 + 0.2048, "val_n": 1024}
    assert refs.epochs_for(probe, 120.0, 10240) == 10          # 12 s per epoch
    assert refs.epochs_for(probe, 1200.0, 10240) == 100
    assert refs.epochs_for(probe, 5.0, 10240) == refs.MIN_EPOCHS  # never fewer than the minimum
    assert refs.epochs_for(probe, 1e9, 10240) == refs.MAX_EPOCHS


def test_split_file_parts_join_back(tmp_path: Path):
    refs = _script("gpu_references")
    data = np.random.default_rng(0).integers(0, 256, 10_000, dtype=np.uint8).tobytes()
    (tmp_path / "a.tar").write_bytes(data)
    out = tmp_path / "out"
    out.mkdir()
    parts = refs.split_file(tmp_path / "a.tar", out, 3000)
    assert [p.name for p in parts] == [f"a.tar.part{i:02d}" for i in range(4)]
    assert all(p.stat().st_size <= 3000 for p in parts)
    assert b"".join(p.read_bytes() for p in parts) == data


def test_prefetch_keeps_items_and_order():
    items = [(i, i * i) for i in range(50)]
    assert list(prefetch(iter(items), depth=3)) == items


def test_prefetch_raises_the_producers_error_and_stops_early():
    def produce():
        yield 1
        yield 2
        raise ValueError("unreadable batch")

    got = []
    with pytest.raises(ValueError, match="unreadable batch"):
        for item in prefetch(produce()):
            got.append(item)
    assert got == [1, 2]
    # A consumer that stops early (an exception in the training step) leaves no thread blocked forever.
    gen = prefetch(iter(range(1000)), depth=1)
    assert next(gen) == 0
    gen.close()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU, so --device cuda works here")
def test_device_cuda_without_a_gpu_is_a_clear_error(tmp_path: Path):
    from ghostnet_edge.train import TrainConfig, train

    with pytest.raises(GhostEdgeError, match="no CUDA GPU") as info:
        train(TrainConfig(model="ghostnet_cifar_050", data="digits", epochs=1, out=tmp_path / "run", device="cuda",
                          progress=False))
    assert "--device cpu" in info.value.hint
    assert not (tmp_path / "run").exists()


def test_unknown_device_is_refused_before_anything_runs(tmp_path: Path):
    from ghostnet_edge.train import TrainConfig

    with pytest.raises(GhostEdgeError, match="--device tpu"):
        TrainConfig(out=tmp_path, device="tpu").validate()


@pytest.mark.slow
def test_gpu_reference_driver_end_to_end_on_a_cpu(cifar_tar: Path, tmp_path: Path):
    """scripts/gpu_references.py's flow with --device cpu --smoke and a fixed epoch count (the fitting
    of epochs to a budget is test_epochs_fitted_to_a_budget_use_the_measured_speed): the run, the packed
    results split into parts that join back into a tar holding a loadable model.pt and the exact command."""
    import os
    import subprocess
    import tarfile

    env = {**os.environ, "GHOSTEDGE_CIFAR_TAR": str(cifar_tar), "PYTHONPATH": str(REPO)}
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_references.py"), "--device", "cpu", "--smoke",
                           "--budget-s", "400", "--epochs", "3", "--out", str(out), "--work", str(tmp_path / "work"),
                           "ghostnet_cifar_050:3"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["runs"]["ghostnet_cifar_050-s3"]["finished"] is True
    joined = tmp_path / "results.tar"
    joined.write_bytes(b"".join(p.read_bytes() for p in sorted(out.glob("results.tar.part*"))))
    with tarfile.open(joined) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    run = tmp_path / "x" / "gpu-references" / "ghostnet_cifar_050-s3"
    info = json.loads((run / "run.json").read_text())
    assert info["command"][:4] == ["ghostedge", "train", "--model", "ghostnet_cifar_050"]
    assert "--seed" in info["command"] and info["command"][info["command"].index("--seed") + 1] == "3"
    from ghostnet_edge.models.checkpoint import load_checkpoint

    ckpt = load_checkpoint(run / "model.pt")
    assert ckpt.meta["seed"] == 3 and ckpt.meta["epochs_done"] == summary["epochs"]["ghostnet_cifar_050"] == 3
