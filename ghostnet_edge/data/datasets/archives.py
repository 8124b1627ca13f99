"""Tar archives of a folder layout (the CIFAR-10 JPEG tree), extracted once into a cache.

A tar is keyed in the cache by its name, size and mtime; one split is extracted at a time, and small
same-size images are also decoded once into a uint8 ``.npy`` array (plus a JSON of labels, names and
bad images) that later runs memory-map instead of reading the files.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ghostnet_edge.data.datasets.base import ArrayDataset, FileDataset, ImageDataset
from ghostnet_edge.data.datasets.folders import _ALL_SPLIT_DIRS, folder_dataset, pick_split_dir
from ghostnet_edge.data.images import load_rgb
from ghostnet_edge.data.transforms import SMALL_INPUT_MAX, Preprocess
from ghostnet_edge.errors import BadImageError, DataError
from ghostnet_edge.utils.atomic import atomic_path, atomic_write_json, file_lock
from ghostnet_edge.utils.paths import cache_home

# Part of the decoded-array cache's file names: bump it when their content or JSON changes.
_ARRAY_CACHE_VERSION = "v1"


def default_cache_dir() -> Path:
    """``$GHOSTEDGE_CACHE`` or ``~/.cache/ghostedge``."""
    return cache_home()


def _is_tar(path: Path) -> bool:
    return path.name.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz"))


def tar_cache_folder(tar_path: Path, cache_dir: str | Path | None = None) -> Path:
    """Cache folder for one tar, keyed by its name, size and mtime so a changed tar is re-extracted."""
    st = tar_path.stat()
    stem = tar_path.name.split(".")[0]
    return Path(cache_dir or default_cache_dir()) / "datasets" / f"{stem}-{st.st_size}-{st.st_mtime_ns}"


def tar_tree(tar_path: Path, folder: Path) -> dict[str, Any]:
    """``{"root": top folder or "", "splits": [split folder names]}`` of a tar, from one scan of its headers.

    Cached next to the extraction, so a later run that finds its decoded arrays never reads the tar.
    """
    path = folder / "tree.json"
    if path.is_file():
        return json.loads(path.read_text())
    try:
        with tarfile.open(tar_path) as tar:
            names = [m.name.strip("/") for m in tar.getmembers()]
    except (tarfile.TarError, OSError) as exc:
        raise DataError(f"cannot read {tar_path}: {exc}", "check the archive with: tar tf FILE") from exc
    tops = {n.split("/")[0] for n in names if n and not n.startswith(".")}
    root = next(iter(tops)) if len(tops) == 1 and any("/" in n for n in names) else ""
    prefix = f"{root}/" if root else ""
    children = {n[len(prefix):].split("/")[0] for n in names if n.startswith(prefix) and "/" in n[len(prefix):]}
    tree = {"root": root, "splits": sorted(children & _ALL_SPLIT_DIRS)}
    atomic_write_json(path, tree)
    return tree


def extract_tar(tar_path: Path, cache_dir: str | Path | None = None, subtree: str = "") -> Path:
    """Extract ``tar_path`` (or only the members under ``subtree``) once into the cache.

    Returns ``<cache>/files`` (the extracted tree). Members are extracted into a temporary folder and
    renamed into place, so an interrupted extraction never leaves a partial tree later runs would trust.
    Only one split is extracted at a time: 10,000 CIFAR test images take a sixth of the full tree's time.
    """
    folder = tar_cache_folder(tar_path, cache_dir)
    files = folder / "files"
    final = files / subtree if subtree else files
    if final.is_dir():
        return files
    with file_lock(folder.parent / f".{folder.name}.lock"):
        if final.is_dir():
            return files
        folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".files.extracting-", dir=folder))
        try:
            with tarfile.open(tar_path) as tar:
                members = [m for m in tar.getmembers() if not subtree or m.name.strip("/") == subtree
                           or m.name.startswith(subtree.rstrip("/") + "/")]
                # "data" filter: no absolute paths, no '..', no device files or links escaping the tree.
                tar.extractall(staging, members=members, filter="data")
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / subtree if subtree else staging, final)
        except (tarfile.TarError, OSError) as exc:
            raise DataError(f"cannot extract {tar_path}: {exc}", "check the archive (tar tf FILE) and free disk space") from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return files


def tar_dataset(tar_path: Path, split: str, preprocess: Preprocess | None, skip_bad_images: bool = False,
                cache_dir: str | Path | None = None) -> ImageDataset:
    """A tar of a folder layout: the split is extracted once; small same-size images are also decoded
    once into a uint8 array that later runs read instead of the files."""
    folder = tar_cache_folder(tar_path, cache_dir)
    tree = tar_tree(tar_path, folder)
    split_dir = pick_split_dir(frozenset(tree["splits"]), split)
    if tree["splits"] and split_dir is None:
        raise DataError(f"{tar_path} has no '{split}' split (found: {', '.join(tree['splits'])})",
                        f"choose --split {tree['splits'][0]}")
    subtree = "/".join(p for p in (tree["root"], split_dir) if p)
    key = f"{split_dir or 'all'}.{_ARRAY_CACHE_VERSION}"
    cached = _load_array_cache(folder, key, preprocess, skip_bad_images)
    if cached is not None:
        return cached
    files = extract_tar(tar_path, cache_dir, subtree)
    files_ds = folder_dataset(files / tree["root"] if tree["root"] else files, split, preprocess, skip_bad_images)
    if not isinstance(files_ds, FileDataset) or not files_ds.samples:
        return files_ds
    first = files_ds.load_uint8(0)
    if max(first.shape[:2]) > SMALL_INPUT_MAX:
        return files_ds  # large photos: decoding them all into RAM would not pay off
    return _cached_array_dataset(files_ds, folder, key, skip_bad_images)


def _cached_array_dataset(files_ds: FileDataset, folder: Path, key: str, skip_bad_images: bool) -> ImageDataset:
    """Decode every image of ``files_ds`` once into ``<key>.images.npy`` (+ ``<key>.json``) and open it."""
    with file_lock(folder.parent / f".{folder.name}.lock"):
        if not (folder / f"{key}.images.npy").is_file() or not (folder / f"{key}.json").is_file():
            _build_array_cache(files_ds, folder / f"{key}.images.npy", folder / f"{key}.json")
    ds = _load_array_cache(folder, key, files_ds.preprocess, skip_bad_images)
    return files_ds if ds is None else ds


def _load_array_cache(folder: Path, key: str, preprocess: Preprocess | None,
                      skip_bad_images: bool) -> ArrayDataset | None:
    """The cached split as an ArrayDataset; None when absent or when its images differ in size."""
    images_path, info_path = folder / f"{key}.images.npy", folder / f"{key}.json"
    if not (images_path.is_file() and info_path.is_file()):
        return None
    info = json.loads(info_path.read_text())
    if info["bad"] and not skip_bad_images:
        first, more = info["bad"][0], len(info["bad"]) - 1
        raise BadImageError(first["path"], first["reason"] + (f" (and {more} more bad images)" if more else ""))
    if info.get("mixed_sizes"):
        return None
    ds = ArrayDataset(np.load(images_path, mmap_mode="r"), info["labels"], info["classes"], preprocess,
                      info["source"], skip_bad_images, names=info["names"])
    ds.layout = info["layout"] + "+npy"
    ds.unsplit = info["unsplit"]
    ds.bad_images = [b["path"] for b in info["bad"]]
    return ds


def _build_array_cache(files_ds: FileDataset, images_path: Path, info_path: Path) -> None:
    def decode(path: Path) -> np.ndarray | BadImageError:
        try:
            return np.asarray(load_rgb(path))
        except BadImageError as exc:
            return exc

    decoded, labels, names, bad = [], [], [], []
    # Pillow releases the GIL while decoding, so threads use every core for this one-off pass.
    with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
        results = pool.map(decode, [p for p, _ in files_ds.samples], chunksize=256)
        for (path, label), arr in zip(files_ds.samples, results, strict=True):
            if isinstance(arr, BadImageError):
                bad.append({"path": str(path), "reason": arr.reason})
                continue
            decoded.append(arr)
            labels.append(int(label))
            names.append(str(path))
    mixed = len({a.shape for a in decoded}) > 1
    with atomic_path(images_path, suffix=".npy") as tmp:
        np.save(tmp, np.stack(decoded) if decoded and not mixed else np.zeros((0, 1, 1, 3), np.uint8))
    atomic_write_json(info_path, {"classes": files_ds.classes, "labels": labels, "names": names,
                                  "bad": bad, "mixed_sizes": mixed, "source": files_ds.source,
                                  "layout": files_ds.layout, "unsplit": files_ds.unsplit})
