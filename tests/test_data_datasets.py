"""open_dataset layouts, errors, subsets, the tar cache and the seeded batch iterator."""

from __future__ import annotations

import json
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ghostnet_edge.data import (
    balanced_indices,
    class_mapping,
    detect_layout,
    iterate_batches,
    open_dataset,
    stratified_split,
)
from ghostnet_edge.data.loader import epoch_order, shard
from ghostnet_edge.errors import BadImageError, DataError
from ghostnet_edge.models import get_spec

CIFAR = get_spec("ghostnet_cifar_050")


def _img(path: Path, color: tuple[int, int, int], size=(32, 32)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def _class_tree(root: Path, classes=("cat", "dog", "emu"), per_class=3, splits=("train", "val")) -> Path:
    for split in splits:
        for ci, c in enumerate(classes):
            for i in range(per_class):
                _img(root / split / c / f"{i}.png", (ci * 80, i * 10, 5))
    return root


def test_class_folders_with_splits(tmp_path):
    root = _class_tree(tmp_path / "data")
    (root / "val" / "dog" / "readme.txt").write_text("not an image, ignored")
    assert detect_layout(root) == "class-folders"
    ds = open_dataset(root, "val", CIFAR)
    assert ds.classes == ["cat", "dog", "emu"] and len(ds) == 9
    assert sorted(set(ds.labels.tolist())) == [0, 1, 2]
    x, y = ds[4]
    assert x.shape == (3, 32, 32) and x.dtype == np.float32 and y == 1
    assert len(open_dataset(root, "train", CIFAR)) == 9
    with pytest.raises(DataError, match="no 'val' split"):
        open_dataset(_class_tree(tmp_path / "only_train", splits=("train",)), "val", CIFAR)


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        open_dataset(tmp_path / "nope", "val", CIFAR)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        open_dataset(tmp_path / "empty", "val", CIFAR)
    (tmp_path / "txt").mkdir()
    (tmp_path / "txt" / "a.txt").write_text("x")
    with pytest.raises(DataError, match="no images"):
        open_dataset(tmp_path / "txt", "val", CIFAR)
    (tmp_path / "cls" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="contain no images"):
        open_dataset(tmp_path / "cls", "val", CIFAR)
    with pytest.raises(DataError, match="unknown split"):
        open_dataset("digits", "dev", CIFAR)


def test_imagenet_wnid_folders_use_standard_indices(tmp_path, imagenet_samples):
    root = tmp_path / "inet"
    _img(root / "val" / "n01440764" / "a.JPEG", (1, 2, 3))
    _img(root / "val" / "n01530575" / "b.JPEG", (1, 2, 3))
    (root / "imagenet_class_index.json").write_bytes((imagenet_samples / "imagenet_class_index.json").read_bytes())
    ds = open_dataset(root, "val", get_spec("ghostnet_100"))
    assert ds.layout == "imagenet-folders" and len(ds.classes) == 1000
    assert ds.labels.tolist() == [0, 10] and ds.classes[10] == "brambling"


def test_flat_wnid_imagenet_samples(imagenet_samples):
    assert detect_layout(imagenet_samples) == "flat-wnid"
    ds = open_dataset(imagenet_samples, "val", get_spec("ghostnet_100"))
    assert len(ds) == 100 and len(ds.classes) == 1000
    by_name = {Path(p).name: label for p, label in ds.samples}
    assert by_name["n01440764_tench.JPEG"] == 0
    assert all(label % 10 == 0 for label in by_name.values())   # one image for every tenth class
    x, _ = ds[0]
    assert x.shape == (3, 224, 224)


def test_flat_wnid_without_index_and_unlabelled_folder(tmp_path):
    _img(tmp_path / "w" / "n01440764_tench.JPEG", (0, 0, 0))
    with pytest.raises(DataError, match="imagenet_class_index.json"):
        open_dataset(tmp_path / "w", "val", CIFAR)
    _img(tmp_path / "photos" / "holiday.jpg", (0, 0, 0))
    ds = open_dataset(tmp_path / "photos", "val", CIFAR)
    assert ds.layout == "flat" and ds.labels.tolist() == [-1] and not ds.labelled


def _write_batch(path: Path, images: np.ndarray, labels: list[int]) -> None:
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), -1)   # R plane, G plane, B plane
    batch = {b"batch_label": b"test", b"labels": labels, b"data": rows,
             b"filenames": [f"{i}.png".encode() for i in range(len(labels))]}
    with open(path, "wb") as fh:
        pickle.dump(batch, fh, protocol=2)


def test_cifar_pickle_batches(tmp_path):
    rng = np.random.default_rng(0)
    train_imgs = rng.integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    test_imgs = rng.integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    _write_batch(root / "data_batch_1", train_imgs[:2], [1, 2])
    _write_batch(root / "data_batch_2", train_imgs[2:], [3, 9])
    _write_batch(root / "test_batch", test_imgs, [0, 5, 7])
    with open(root / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [n.encode() for n in
                                      ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                       "ship", "truck")]}, fh, protocol=2)
    assert detect_layout(tmp_path) == "cifar10-pickle"
    tr = open_dataset(tmp_path, "train", CIFAR)
    te = open_dataset(root, "test", CIFAR)
    assert len(tr) == 4 and tr.labels.tolist() == [1, 2, 3, 9] and te.classes[9] == "truck"
    np.testing.assert_array_equal(tr.load_uint8(2), train_imgs[2])    # channel order survived
    np.testing.assert_array_equal(te.images, test_imgs)


def test_cifar_pickle_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    root = tmp_path / "c"
    root.mkdir()
    with open(root / "test_batch", "wb") as fh:
        pickle.dump({b"data": Evil(), b"labels": [0]}, fh, protocol=2)
    with pytest.raises(DataError, match=r"refusing to load (__builtin__|builtins)\.print"):
        open_dataset(root, "test", CIFAR)


def test_digits_split_is_stratified_seeded_and_disjoint():
    tr = open_dataset("digits", "train", CIFAR)
    va = open_dataset("digits", "val", CIFAR)
    assert len(tr) + len(va) == 1797 and len(va) == 359
    assert np.bincount(va.labels).min() >= 34
    assert tr.images.shape[1:] == (32, 32, 3) and tr.images.dtype == np.uint8
    train_rows = {row.tobytes() for row in tr.images}
    assert sum(row.tobytes() in train_rows for row in va.images) < 5   # 8x8 digits repeat rarely
    other = open_dataset("digits", "val", CIFAR, split_seed=1)
    assert not np.array_equal(other.labels, va.labels) or not np.array_equal(other.images, va.images)


def test_stratified_split_and_balanced_subset_pure():
    labels = np.array([0] * 10 + [1] * 10 + [2] * 3)
    tr, va = stratified_split(labels, 0.2, seed=0)
    assert set(tr) | set(va) == set(range(23)) and not set(tr) & set(va)
    assert np.bincount(labels[va]).tolist() == [2, 2, 1]
    idx = balanced_indices(labels, 7, seed=1)
    assert sorted(np.bincount(labels[idx]).tolist()) == [2, 2, 3]
    np.testing.assert_array_equal(idx, balanced_indices(labels, 7, seed=1))
    assert np.bincount(labels[balanced_indices(labels, 9, seed=5)]).tolist() == [3, 3, 3]
    ds = open_dataset("digits", "val", CIFAR)
    sub = ds.subset(50, seed=0)
    assert len(sub) == 50 and np.bincount(sub.labels).tolist() == [5] * 10
    assert ds.subset(None) is ds and ds.subset(10_000) is ds


def test_class_mapping_names_differences():
    np.testing.assert_array_equal(class_mapping(["b", "a"], ["a", "b", "c"]), [1, 0])
    with pytest.raises(DataError) as err:
        class_mapping(["cat", "zebra", "dog"], ["cat", "dog", "bird"])
    assert "'zebra'" in err.value.message and "'bird'" in err.value.message


def test_bad_image_named_or_skipped_and_counted(tmp_path):
    root = _class_tree(tmp_path / "d", splits=("val",))
    bad = root / "val" / "dog" / "broken.png"
    bad.write_bytes((root / "val" / "dog" / "0.png").read_bytes()[:40])
    ds = open_dataset(root, "val", CIFAR)
    with pytest.raises(BadImageError) as err:
        list(iterate_batches(ds, 4))
    assert "broken.png" in str(err.value)
    ds = open_dataset(root, "val", CIFAR, skip_bad_images=True)
    n = sum(len(y) for _, y in iterate_batches(ds, 4))
    assert n == 9 and ds.bad_images == [str(bad)]


def test_iterate_batches_order_shards_and_per_sample_augmentation():
    ds = open_dataset("digits", "train", CIFAR, train=True).subset(60, seed=0)
    a = [y.numpy() for _, y in iterate_batches(ds, 16, shuffle=True, seed=3, epoch=0)]
    b = [y.numpy() for _, y in iterate_batches(ds, 16, shuffle=True, seed=3, epoch=0)]
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    np.testing.assert_array_equal(epoch_order(60, True, 3, 0), epoch_order(60, True, 3, 0))
    assert not np.array_equal(epoch_order(60, True, 3, 0), epoch_order(60, True, 3, 1))
    order = epoch_order(61, True, 0, 0)
    shards = [shard(order, r, 2) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 31 and set(np.concatenate(shards)) == set(range(61))
    assert sum(len(shard(order, r, 2, pad=False)) for r in range(2)) == 61
    # a sample is augmented the same whether it comes alone or in any batch
    ds.set_epoch(2, seed=3)
    single = ds[5][0]
    x, _ = ds.load_batch([9, 5, 1])
    np.testing.assert_array_equal(x[1], single)
    before = [ds[i][0] for i in range(8)]
    ds.set_epoch(3, seed=3)
    assert any(not np.array_equal(ds[i][0], before[i]) for i in range(8))   # a new epoch, new crops


def _tiny_cifar_tar(tmp_path: Path, bad: bool = False) -> Path:
    src = tmp_path / "src"
    for split, n in (("train", 3), ("test", 2)):
        for ci, c in enumerate(("airplane", "automobile")):
            for i in range(n):
                _img(src / "cifar10" / split / c / f"{i:04d}.png", (ci * 100, i * 20, 7))
    if bad:
        (src / "cifar10" / "test" / "airplane" / "9999.jpg").write_text("garbage")
    tar_path = tmp_path / "tiny-cifar.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(src / "cifar10", arcname="cifar10")
    return tar_path


def test_tar_extracted_once_and_cached_as_array(tmp_path):
    tar_path = _tiny_cifar_tar(tmp_path)
    cache = tmp_path / "cache"
    ds = open_dataset(tar_path, "val", CIFAR, cache_dir=cache)
    assert ds.layout == "class-folders+npy" and len(ds) == 4 and ds.classes == ["airplane", "automobile"]
    assert tuple(ds.load_uint8(2)[0, 0]) == (100, 0, 7)
    assert not list(cache.rglob("train"))            # only the split asked for was extracted
    npy = next(cache.rglob("test.*.images.npy"))
    info = json.loads(next(cache.rglob("test.*.json")).read_text())
    assert info["labels"] == [0, 0, 1, 1] and not info["bad"]
    stamp = npy.stat().st_mtime_ns
    again = open_dataset(tar_path, "test", CIFAR, cache_dir=cache)
    assert npy.stat().st_mtime_ns == stamp and len(again) == 4
    assert len(open_dataset(tar_path, "train", CIFAR, cache_dir=cache)) == 6
    assert not list(cache.rglob(".files.extracting-*"))


def test_tar_with_bad_image(tmp_path):
    tar_path = _tiny_cifar_tar(tmp_path, bad=True)
    with pytest.raises(BadImageError, match="9999.jpg"):
        open_dataset(tar_path, "test", CIFAR, cache_dir=tmp_path / "c")
    ds = open_dataset(tar_path, "test", CIFAR, cache_dir=tmp_path / "c", skip_bad_images=True)
    assert len(ds) == 4 and len(ds.bad_images) == 1


@pytest.mark.slow
def test_real_cifar10_tar(cifar_tar, cache_dir):
    """The shared CIFAR-10 JPEG tar: 10,000 test images, 1,000 per class, standard class order."""
    ds = open_dataset(cifar_tar, "test", CIFAR, cache_dir=cache_dir)
    assert len(ds) == 10_000 and ds.classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                                 "horse", "ship", "truck"]
    assert np.bincount(ds.labels).tolist() == [1000] * 10
    x, y = next(iterate_batches(ds, 64))
    assert x.shape == (64, 3, 32, 32) and abs(float(x.mean())) < 1.0
