"""Shared fixtures. Stage-specific fixtures live in the stage's own test files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GHOSTEDGE_SHARED", REPO_ROOT.parent / "shared"))


def pytest_configure(config: pytest.Config) -> None:
    # Two cores are shared by everything here: keep each test single-threaded and deterministic.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent (a user's checkout has no ../shared); set GHOSTEDGE_SHARED")
    return SHARED


@pytest.fixture(scope="session")
def imagenet_samples(shared_dir: Path) -> Path:
    path = shared_dir / "data" / "imagenet-samples"
    if not path.is_dir():
        pytest.skip(f"{path} is absent")
    return path


@pytest.fixture(scope="session")
def cifar_tar(shared_dir: Path) -> Path:
    path = shared_dir / "data" / "cifar10-jpg.tar"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path


@pytest.fixture(scope="session")
def reference_dir(shared_dir: Path) -> Path:
    return shared_dir / "reference"


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache that survives between test sessions (extracted data sets, sysroots)."""
    path = Path(os.environ.get("GHOSTEDGE_CACHE", Path.home() / ".cache" / "ghostedge"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A calibration-tensor cache of this test session only (``GHOSTEDGE_CACHE``), not the user's."""
    path = tmp_path_factory.getbasetemp() / "ghostedge-cache"
    monkeypatch.setenv("GHOSTEDGE_CACHE", str(path))
    return path


@pytest.fixture(scope="session")
def cifar_images(cifar_tar: Path, tmp_path_factory: pytest.TempPathFactory):
    """``cifar_images(per_class, split)``: a folder of real CIFAR-10 JPEGs in class sub-folders (made once)."""
    from ghostnet_edge.calib.sampler import extract_tar_images

    made: dict[tuple[int, str], Path] = {}

    def make(per_class: int, split: str = "test") -> Path:
        if (per_class, split) not in made:
            root = tmp_path_factory.mktemp(f"cifar-{split}-{per_class}") / "images"
            assert extract_tar_images(cifar_tar, root, per_class=per_class, split=split) == 10 * per_class
            made[per_class, split] = root
        return made[per_class, split]

    return make


@pytest.fixture(scope="session")
def qemu_sysroot():
    """The emulated-ARM sysroot's status; the test is skipped, with the command that builds it, when absent."""
    from ghostnet_edge.errors import TargetError
    from ghostnet_edge.runtime.qemu import sysroot as sr

    try:
        return sr.check_sysroot()
    except TargetError as exc:
        pytest.skip(f"qemu-aarch64 target not set up ({exc.message}); run: {sr.BUILD_COMMAND}")


@pytest.fixture
def quantized_both_ways(tmp_path: Path):
    """``digests(name, option, choice, per_channel)``: the seeded network ``name`` exported to FP32 ONNX,
    calibrated (MinMax) on 8 random 32x32 images, and quantized by ``quantize_onnx`` with the keyword
    ``option`` False, then True; the sha256 of both INT8 models, which should be the same bytes."""
    import hashlib

    import numpy as np

    def digests(name: str, option: str, choice, per_channel: bool = True) -> list[str]:
        from ghostnet_edge.calib.ranges import collect_ranges
        from ghostnet_edge.export.onnx.convert import export_onnx
        from ghostnet_edge.export.onnx.quantize import quantize_onnx
        from ghostnet_edge.models import create_model, get_spec

        src = tmp_path / f"{name}.onnx"
        if not src.exists():
            export_onnx(create_model(name, seed=0).eval(), get_spec(name).input_size, src)
        x = np.random.default_rng(1).standard_normal((8, 3, 32, 32)).astype(np.float32)
        ranges = collect_ranges(src, x, "minmax", threads=1, use_cache=False)
        out = []
        for value in (False, True):
            path = tmp_path / f"{name}_{option}_{value}.onnx"
            quantize_onnx(src, path, x, "minmax", choice, per_channel, work_dir=tmp_path, threads=1, ranges=ranges,
                          **{option: value})
            out.append(hashlib.sha256(path.read_bytes()).hexdigest())
        return out

    return digests
