"""Export images from a folder, any data set layout, or memory: the same images give the same draws,
the same arrays and the same artifacts, whichever form they arrive in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ghostnet_edge.calib.sampler import split_calibration_verification
from ghostnet_edge.calib.sources import (
    DatasetImageSet,
    as_dataset,
    draw_positions,
    image_source,
    is_folder_of_images,
    load_tensors,
    split_dataset,
)
from ghostnet_edge.data.datasets.base import ArrayDataset
from ghostnet_edge.errors import DataError

CLASSES = ["cat", "dog", "frog"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[ArrayDataset, Path]:
    """The same 30 labelled images as an in-memory data set and as PNG class folders (lossless)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(30, 20, 24, 3), dtype=np.uint8)
    labels = [i % 3 for i in range(30)]
    ds = ArrayDataset(images, labels, CLASSES, None, "thirty")
    root = tmp_path_factory.mktemp("pngs")
    for i, (img, lab) in enumerate(zip(images, labels, strict=True)):
        (root / CLASSES[lab]).mkdir(exist_ok=True)
        Image.fromarray(img).save(root / CLASSES[lab] / f"{i:05d}.png")
    return ds, root


def _pre():
    from ghostnet_edge.data import Preprocess
    from ghostnet_edge.models import get_spec

    return Preprocess.from_spec(get_spec("ghostnet_cifar_050"))


def test_draw_positions_is_the_file_draw() -> None:
    from ghostnet_edge.calib.sampler import draw

    files = [Path(f"/x/{i:03d}.png") for i in range(50)]
    for seed in (0, 1, 7):
        exclude = set(draw_positions(50, 10, seed + 1))
        picked = draw_positions(50, 20, seed, exclude)
        assert picked == [int(p.stem) for p in draw(files, 20, seed, exclude=[files[i] for i in exclude])]
        assert not set(picked) & exclude and picked == sorted(picked)


def test_data_set_and_folder_give_the_same_draws_and_arrays(pair: tuple[ArrayDataset, Path]) -> None:
    ds, root = pair
    c_files, v_files = split_calibration_verification(root, 12, 6, seed=3)
    c_ds, v_ds = split_dataset(ds, 12, 6, seed=3)
    assert isinstance(c_ds, DatasetImageSet) and (c_ds.count, v_ds.count) == (12, 6)
    assert list(c_ds.labels) == list(c_files.labels) and list(v_ds.labels) == list(v_files.labels)
    pre = _pre()
    for from_files, from_data in ((c_files, c_ds), (v_files, v_ds)):
        a = load_tensors(from_files, pre, use_cache=False).array
        b = load_tensors(from_data, pre, use_cache=False).array
        assert a.shape == (from_files.count, 3, 32, 32) and np.array_equal(a, b)
    assert not set(c_ds.positions) & set(v_ds.positions)   # held out, never calibrated on
    summary = c_ds.summary()
    assert summary["root"] == "thirty" and summary["count"] == 12 and summary["num_classes"] == 3


def test_uint8_arrays_and_bad_inputs() -> None:
    arr = np.zeros((10, 8, 8, 3), np.uint8)
    c, v = split_dataset(arr, 4, 2, seed=0)
    assert (c.count, v.count) == (4, 2) and set(c.labels) == {None}
    with pytest.raises(DataError, match=r"uint8 RGB images shaped \(N, H, W, 3\)"):
        as_dataset(np.zeros((4, 8, 8, 3), np.float32), "calibration")
    with pytest.raises(DataError, match="holds no images"):
        as_dataset(np.zeros((0, 8, 8, 3), np.uint8), "calibration")
    with pytest.raises(DataError, match="only 1 image"):
        split_dataset(arr[:1], 4, 2, seed=0)


def test_what_takes_the_file_route(tmp_path: Path, cifar_tar: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"")
    assert is_folder_of_images(tmp_path) and is_folder_of_images(tmp_path / "missing")
    assert not is_folder_of_images("cifar10") and not is_folder_of_images(cifar_tar)
    assert not is_folder_of_images(np.zeros((1, 2, 2, 3), np.uint8))
    whole = image_source(cifar_tar, "validation")   # a tar of class folders: its validation split
    assert isinstance(whole, DatasetImageSet) and whole.count == 10000 and len(whole.classes) == 10


def test_export_from_memory_matches_export_from_files(pair: tuple[ArrayDataset, Path], tmp_path: Path,
                                                     private_cache: Path) -> None:
    """ExportConfig.calib as an in-memory data set: the same artifacts, byte for byte, as its PNG folder."""
    pytest.importorskip("onnxruntime")
    from ghostnet_edge.export.pipeline import ExportConfig, export_artifacts

    ds, root = pair
    outs = {}
    for name, calib in (("files", root), ("memory", ds)):
        cfg = ExportConfig(model="ghostnet_cifar_050", calib=calib, out=tmp_path / name, formats=("onnx",),
                           num_calib=16, num_verify=8, seed=2, threads=1)
        report = export_artifacts(cfg)
        outs[name] = report
    for art in ("model.onnx", "model_int8.onnx"):
        assert (tmp_path / "files" / art).read_bytes() == (tmp_path / "memory" / art).read_bytes()
    m = outs["memory"].manifest
    assert m["calibration"]["root"] == "thirty" and m["calibration"]["count"] == 16
    assert m["verification"]["count"] == 8 and m["config"]["calib"].startswith("ArrayDataset")
    files_checks = [a.check["max_abs_diff"] for a in outs["files"].artifacts]
    assert files_checks == [a.check["max_abs_diff"] for a in outs["memory"].artifacts]
