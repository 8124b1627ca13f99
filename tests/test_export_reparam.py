"""Export folds training-time branches (GhostNetV3, RepGhostNet) and checks the fold before writing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ghostnet_edge.errors import ExportError
from ghostnet_edge.export.pipeline import ExportConfig, export_artifacts


@pytest.fixture(autouse=True)
def _private_cache(private_cache: Path) -> None:
    """Every test here uses a cache of its own session (see conftest)."""


@pytest.fixture(scope="module")
def images(cifar_images) -> Path:
    return cifar_images(2)


@pytest.fixture(scope="module")
def trained_form(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RepGhostNet in its training form, with BatchNorm statistics from a few batches (not the defaults)."""
    from ghostnet_edge.models import create_model, save_checkpoint
    from ghostnet_edge.models.reparam import has_branches

    model = create_model("repghostnet_cifar_100", seed=0)
    assert has_branches(model)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(1)))
    path = tmp_path_factory.mktemp("ckpt") / "rep.pt"
    save_checkpoint(path, model.eval(), {"seed": 0})
    return path


def _cfg(ckpt: Path, calib: Path, out: Path) -> ExportConfig:
    return ExportConfig(checkpoint=ckpt, calib=calib, out=out, formats=("onnx",), int8=False, num_verify=8,
                        threads=1)


def test_branches_are_folded_and_checked(trained_form: Path, images: Path, tmp_path: Path) -> None:
    import onnx

    report = export_artifacts(_cfg(trained_form, images, tmp_path / "out"))
    assert any(w.startswith("re-parameterised") for w in report.warnings)
    graph = onnx.load(tmp_path / "out" / "model.onnx").graph
    assert not any(n.op_type == "BatchNormalization" for n in graph.node)
    assert report.artifacts[0].check["passed"]


def test_a_fold_that_changes_the_logits_writes_nothing(trained_form: Path, images: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from ghostnet_edge.models import reparam

    real = reparam.reparameterize

    def broken(model, inplace=False):
        folded = real(model, inplace)
        with torch.no_grad():
            next(folded.parameters()).add_(0.5)
        return folded

    monkeypatch.setattr(reparam, "reparameterize", broken)
    with pytest.raises(ExportError, match="folding the re-parameterisable branches changed the logits"):
        export_artifacts(_cfg(trained_form, images, tmp_path / "out"))
    assert not (tmp_path / "out").exists()
