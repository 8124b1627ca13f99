"""Calibration stage: which images are drawn (seeded, disjoint from verification) and the tensor cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ghostnet_edge.calib import (
    calibration_tensors,
    draw,
    label_of,
    list_images,
    select_calibration_images,
    split_calibration_verification,
)
from ghostnet_edge.calib.cache import cache_key, prune
from ghostnet_edge.calib.sampler import extract_tar_images, hash_file_list
from ghostnet_edge.data import Preprocess
from ghostnet_edge.errors import DataError


def _png(path: Path, seed: int, size: tuple[int, int] = (40, 36)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    """20 images in 4 class folders, plus files a scan must ignore."""
    root = tmp_path / "imgs"
    for c in range(4):
        for i in range(5):
            _png(root / f"class{c}" / f"{i:02d}.png", seed=c * 10 + i)
    (root / "class0" / "notes.txt").write_text("not an image")
    _png(root / "class1" / ".hidden.png", seed=99)
    return root


def _pre() -> Preprocess:
    return Preprocess(input_size=(3, 32, 32), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), resize_size=32)


# ---- listing and drawing -----------------------------------------------------------------------------


def test_list_images_is_recursive_sorted_and_skips_non_images(folder: Path) -> None:
    files = list_images(folder)
    assert len(files) == 20
    rel = [f.relative_to(folder).as_posix() for f in files]
    assert rel == sorted(rel)
    assert not any(r.endswith((".txt", ".hidden.png")) for r in rel)


def test_uppercase_extension_counts_as_image(tmp_path: Path) -> None:
    _png(tmp_path / "a" / "n01440764_tench.JPEG", seed=1)  # PNG bytes, name like ImageNet's
    assert len(list_images(tmp_path / "a")) == 1


@pytest.mark.parametrize("case, expected", [("missing", "does not exist"), ("empty", "is empty"),
                                            ("no_images", "contains no image files"), ("file", "is not a folder")])
def test_bad_calibration_folders_fail_clearly(tmp_path: Path, case: str, expected: str) -> None:
    path = tmp_path / "calib"
    if case == "empty":
        path.mkdir()
    elif case == "no_images":
        path.mkdir()
        (path / "readme.md").write_text("x")
    elif case == "file":
        path.write_text("x")
    with pytest.raises(DataError) as err:
        list_images(path)
    assert expected in err.value.message
    assert err.value.hint


def test_draw_is_seeded_sorted_and_respects_exclude(folder: Path) -> None:
    files = list_images(folder)
    a, b, c = draw(files, 8, seed=3), draw(files, 8, seed=3), draw(files, 8, seed=4)
    assert a == b and a != c
    assert a == sorted(a, key=lambda p: p.as_posix())
    excluded = set(a[:4])
    d = draw(files, 30, seed=3, exclude=excluded)
    assert len(d) == 16 and not excluded & set(d)


def test_draw_depends_on_names_not_listing_order(folder: Path) -> None:
    files = list_images(folder)
    assert draw(files, 6, seed=1) == draw(sorted(files, key=lambda p: p.as_posix()), 6, seed=1)


def test_labels_from_folders_and_wnid_prefixes(tmp_path: Path) -> None:
    root = tmp_path
    assert label_of(root / "cat" / "1.jpg", root) == "cat"
    assert label_of(root / "n01440764_tench.JPEG", root) == "n01440764"
    assert label_of(root / "photo.jpg", root) is None


def test_split_is_disjoint_and_verification_does_not_depend_on_num_calib(folder: Path) -> None:
    calib, verify = split_calibration_verification(folder, num_calib=8, num_verify=4, seed=0)
    assert calib.count == 8 and verify.count == 4
    assert not set(calib.files) & set(verify.files)
    _, verify2 = split_calibration_verification(folder, num_calib=12, num_verify=4, seed=0)
    assert verify2.files == verify.files
    assert calib.classes and len(calib.classes) <= 4
    s = calib.summary()
    assert s["count"] == 8 and s["requested"] == 8 and s["available"] == 16
    assert s["list_sha256"] == hash_file_list(calib.relative_paths)


def test_too_few_images_warns_and_goes_on(folder: Path) -> None:
    calib, verify = split_calibration_verification(folder, num_calib=256, num_verify=32, seed=0)
    assert verify.count == 10  # at most half of a small folder is held out
    assert calib.count == 10
    assert any("only 10 are available" in w for w in calib.warnings)
    assert any("recommended" in w for w in calib.warnings)
    assert verify.warnings


def test_single_image_cannot_calibrate_and_verify(tmp_path: Path) -> None:
    _png(tmp_path / "one" / "a.png", seed=0)
    with pytest.raises(DataError, match="held out"):
        split_calibration_verification(tmp_path / "one", 10, 4, seed=0)


def test_separate_verification_folder_is_excluded_even_when_nested(folder: Path) -> None:
    calib, verify = split_calibration_verification(folder, 100, 3, seed=0, verify_source=folder / "class2")
    assert verify.count == 3
    assert not {p.resolve() for p in verify.files} & {p.resolve() for p in calib.files}
    assert calib.count == 17


def test_select_rejects_zero(folder: Path) -> None:
    with pytest.raises(DataError, match="at least 1"):
        select_calibration_images(folder, 0)


# ---- tensors and cache ----------------------------------------------------------------------------------


def test_tensors_use_the_eval_preprocessing_and_the_cache(folder: Path, tmp_path: Path) -> None:
    files = list_images(folder)[:6]
    pre = _pre()
    cache = tmp_path / "cache"
    first = calibration_tensors(files, pre, cache_dir=cache)
    assert first.array.shape == (6, 3, 32, 32) and first.array.dtype == np.float32 and not first.cache_hit
    from ghostnet_edge.data import load_rgb

    np.testing.assert_array_equal(first.array[2], pre(load_rgb(files[2])))
    second = calibration_tensors(files, pre, cache_dir=cache)
    assert second.cache_hit and second.key == first.key
    np.testing.assert_array_equal(second.array, first.array)
    assert [p.name for p in cache.iterdir()] == [f"{first.key}.npy"]  # no temporary files left


def test_a_full_cache_disk_keeps_the_images_in_memory(folder: Path, tmp_path: Path, monkeypatch) -> None:
    """The entry's blocks are reserved before the images are written through its mapping: a disk that
    cannot hold it raises there (not SIGBUS mid-write), and the export goes on without the cache."""
    import errno

    files = list_images(folder)[:4]
    cache = tmp_path / "cache"
    expected = calibration_tensors(files, _pre(), use_cache=False).array

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    batch = calibration_tensors(files, _pre(), cache_dir=cache)
    assert batch.cache_file is None and not batch.cache_hit
    np.testing.assert_array_equal(batch.array, expected)
    assert not any(cache.iterdir())  # no partial entry left behind


def test_without_fallocate_the_entry_is_saved_after_decoding(folder: Path, tmp_path: Path, monkeypatch) -> None:
    """Where the OS has no posix_fallocate (macOS) the images are decoded into memory and saved at the end."""
    files = list_images(folder)[:3]
    monkeypatch.delattr(os, "posix_fallocate")
    cache = tmp_path / "cache"
    first = calibration_tensors(files, _pre(), cache_dir=cache)
    assert first.cache_file is not None and not first.cache_hit
    again = calibration_tensors(files, _pre(), cache_dir=cache)
    assert again.cache_hit
    np.testing.assert_array_equal(again.array, first.array)
    assert [p.name for p in cache.iterdir()] == [f"{first.key}.npy"]


def test_a_cached_batch_is_read_only(folder: Path, tmp_path: Path) -> None:
    """Writing into a batch would change the cache entry it maps under the next export."""
    files = list_images(folder)[:3]
    for _ in range(2):  # freshly decoded, then a cache hit
        batch = calibration_tensors(files, _pre(), cache_dir=tmp_path)
        with pytest.raises(ValueError):
            batch.array[0, 0, 0, 0] = 1.0


def test_cache_key_changes_with_file_or_preprocessing(folder: Path) -> None:
    files = list_images(folder)[:3]
    k = cache_key(files, _pre().describe())
    assert cache_key(files, Preprocess((3, 64, 64), (0.5,) * 3, (0.25,) * 3, 64).describe()) != k
    st = files[0].stat()
    os.utime(files[0], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert cache_key(files, _pre().describe()) != k


def test_unreadable_images_are_named(folder: Path, tmp_path: Path) -> None:
    bad = folder / "class3" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    with pytest.raises(DataError) as err:
        calibration_tensors(list_images(folder), _pre(), cache_dir=tmp_path / "c")
    assert "broken.jpg" in err.value.message and err.value.hint
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())


def test_corrupt_cache_entry_is_rebuilt(folder: Path, tmp_path: Path) -> None:
    files = list_images(folder)[:2]
    first = calibration_tensors(files, _pre(), cache_dir=tmp_path)
    expected = np.array(first.array)  # a copy: the batch maps the entry, which is now overwritten in place
    del first
    (tmp_path / f"{cache_key(files, _pre().describe())}.npy").write_bytes(b"garbage")
    again = calibration_tensors(files, _pre(), cache_dir=tmp_path)
    assert not again.cache_hit
    np.testing.assert_array_equal(again.array, expected)


def test_prune_keeps_the_most_recent(tmp_path: Path) -> None:
    for i in range(5):
        p = tmp_path / f"{i}.npy"
        p.write_bytes(b"x")
        os.utime(p, ns=(i * 10**9, i * 10**9))
    removed = prune(tmp_path, max_entries=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["3.npy", "4.npy"]
    assert len(removed) == 3


def test_real_photos_and_tar_subset(imagenet_samples: Path, cifar_tar: Path, tmp_path: Path) -> None:
    """Real data: grayscale/odd-sized ImageNet photos preprocess; the CIFAR tar gives class folders."""
    calib, verify = split_calibration_verification(imagenet_samples, 20, 5, seed=0)
    assert len(calib.classes) == 20  # one wnid per file
    x = calibration_tensors(calib.files, Preprocess((3, 64, 64), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 73),
                            cache_dir=tmp_path / "c").array
    assert x.shape == (20, 3, 64, 64) and np.isfinite(x).all()
    n = extract_tar_images(cifar_tar, tmp_path / "cifar", per_class=3)
    assert n == 30
    c2, _ = split_calibration_verification(tmp_path / "cifar", 20, 5, seed=0)
    assert set(c2.classes) <= {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                               "truck"}
