"""Folder layouts: class sub-folders, ImageNet wnid folders and flat folders of images.

Picks the split folder (``train``, ``val``, ...), reads the ImageNet class index
(``imagenet_class_index.json``) that maps wnids to the 1000 standard labels, and hands a folder of
CIFAR-10 python batches on to :mod:`~ghostnet_edge.data.datasets.cifar`. The layouts are tabled in the
docstring of :mod:`ghostnet_edge.data.datasets`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ghostnet_edge.data.datasets.base import FileDataset, ImageDataset, _preview
from ghostnet_edge.data.datasets.cifar import _cifar_pickle_root, cifar_pickle_dataset
from ghostnet_edge.data.images import is_image_file
from ghostnet_edge.data.transforms import Preprocess
from ghostnet_edge.errors import DataError

CLASS_INDEX_FILE = "imagenet_class_index.json"
_WNID = re.compile(r"^n\d{8}$")
_WNID_PREFIX = re.compile(r"^(n\d{8})_")
_SPLIT_DIRS = {
    "train": ("train", "training"),
    "val": ("val", "validation", "valid", "test"),
    "test": ("test", "val", "validation", "valid"),
}
_ALL_SPLIT_DIRS = frozenset(name for names in _SPLIT_DIRS.values() for name in names)


def image_label(path: Path, root: Path) -> str | None:
    """The class an image's place names: its sub-folder under ``root``, else a ``<wnid>_...`` file-name
    prefix (the flat ImageNet layout), else None. One rule for data sets and for the export's images."""
    path = Path(path)
    rel = path.relative_to(root) if path.is_relative_to(root) else Path(path.name)
    if len(rel.parts) > 1:
        return rel.parts[-2]
    m = _WNID_PREFIX.match(rel.name)
    return m.group(1) if m else None


def folder_dataset(path: Path, split: str, preprocess: Preprocess | None, skip_bad_images: bool = False,
                   class_index: str | Path | None = None) -> ImageDataset:
    """Open a folder in any of the folder layouts (see module doc)."""
    pickle_root = _cifar_pickle_root(path)
    if pickle_root is not None:
        return cifar_pickle_dataset(pickle_root, split, preprocess)
    root = _split_root(path, split)
    if root is None:
        present = sorted(d.name for d in _subdirs(path) if d.name in _ALL_SPLIT_DIRS)
        if present:
            raise DataError(f"{path} has no '{split}' split (found: {', '.join(present)})",
                            f"add {path}/{_SPLIT_DIRS[split][0]}/ or choose --split {present[0]}")
        root = path  # no split folders: the folder itself is the data set, whatever the split
    ds = _folder_root_dataset(root, preprocess, skip_bad_images, class_index)
    ds.unsplit = root == path
    return ds


def _folder_root_dataset(root: Path, preprocess: Preprocess | None, skip_bad_images: bool,
                         class_index: str | Path | None) -> FileDataset:
    class_dirs = _class_dirs(root)
    if class_dirs:
        return _class_folder_dataset(root, class_dirs, preprocess, skip_bad_images, class_index)
    images = _image_files(root)
    if not images:
        if any(root.iterdir()):
            raise DataError(f"no images found in {root}",
                            "expected <class>/<image> sub-folders or image files (.jpg, .png, ...)")
        raise DataError(f"data folder {root} is empty", "put images in it, one sub-folder per class")
    return _flat_dataset(root, images, preprocess, skip_bad_images, class_index)


def _class_folder_dataset(root: Path, class_dirs: list[Path], preprocess: Preprocess | None,
                          skip_bad_images: bool, class_index: str | Path | None) -> FileDataset:
    names = [d.name for d in class_dirs]
    index_path = _find_class_index(root, class_index)
    if index_path is not None and all(_WNID.match(n) for n in names):
        wnids, classes = read_class_index(index_path)
        lookup = {w: i for i, w in enumerate(wnids)}
        unknown = [n for n in names if n not in lookup]
        if unknown:
            raise DataError(f"folders in {root} are not in {index_path.name}: {_preview(unknown)}",
                            "use the 1000 ImageNet wnids as folder names, or pass another class index")
        labels = [lookup[n] for n in names]
        layout = "imagenet-folders"
    else:
        classes, labels, layout = names, list(range(len(names))), "class-folders"
    samples = [(p, label) for d, label in zip(class_dirs, labels, strict=True) for p in _image_files(d)]
    if not samples:
        raise DataError(f"the class folders in {root} contain no images",
                        "put .jpg/.png files in each class folder")
    ds = FileDataset(samples, classes, preprocess, str(root), skip_bad_images)
    ds.layout = layout
    return ds


def _flat_dataset(root: Path, images: list[Path], preprocess: Preprocess | None, skip_bad_images: bool,
                  class_index: str | Path | None) -> FileDataset:
    wnid_named = [p for p in images if _WNID_PREFIX.match(p.name)]
    if not wnid_named:  # unlabelled photos (e.g. calibration images)
        ds = FileDataset([(p, -1) for p in images], [], preprocess, str(root), skip_bad_images)
        ds.layout = "flat"
        return ds
    if len(wnid_named) != len(images):
        odd = [p.name for p in images if not _WNID_PREFIX.match(p.name)]
        raise DataError(f"{root} mixes <wnid>_<name> files with other names ({_preview(odd)})",
                        "name every file <wnid>_<anything>.JPEG, or use one sub-folder per class")
    index_path = _find_class_index(root, class_index)
    if index_path is None:
        raise DataError(f"{root} holds <wnid>_<name> files but no {CLASS_INDEX_FILE} to map wnids to labels",
                        f"put {CLASS_INDEX_FILE} in the folder or pass its path as the class index")
    wnids, classes = read_class_index(index_path)
    lookup = {w: i for i, w in enumerate(wnids)}
    samples, unknown = [], []
    for p in images:
        wnid = _WNID_PREFIX.match(p.name).group(1)
        if wnid in lookup:
            samples.append((p, lookup[wnid]))
        else:
            unknown.append(p.name)
    if unknown:
        raise DataError(f"files in {root} name wnids absent from {index_path.name}: {_preview(unknown)}",
                        "rename them or pass the right class index")
    ds = FileDataset(samples, classes, preprocess, str(root), skip_bad_images)
    ds.layout = "flat-wnid"
    return ds


def read_class_index(path: Path | str) -> tuple[list[str], list[str]]:
    """``imagenet_class_index.json`` ({"0": ["n01440764", "tench"], ...}) -> (wnids, names) by index."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
        items = sorted(((int(k), v) for k, v in raw.items()), key=lambda kv: kv[0])
        if [k for k, _ in items] != list(range(len(items))):
            raise ValueError("indices are not 0..N-1")
        return [str(v[0]) for _, v in items], [str(v[1]) for _, v in items]
    except (OSError, ValueError, TypeError, IndexError, AttributeError) as exc:
        raise DataError(f"cannot read class index {path}: {exc}",
                        'expected JSON like {"0": ["n01440764", "tench"], ...}') from exc


def _find_class_index(root: Path, given: str | Path | None) -> Path | None:
    if given is not None:
        given = Path(given)
        if not given.is_file():
            raise DataError(f"class index {given} does not exist", f"pass the path of {CLASS_INDEX_FILE}")
        return given
    for folder in (root, root.parent, root.parent.parent):
        candidate = folder / CLASS_INDEX_FILE
        if candidate.is_file():
            return candidate
    return None


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def pick_split_dir(names: set[str] | frozenset[str], split: str) -> str | None:
    """Which of the folder ``names`` holds ``split`` (``val`` falls back to ``validation``, ``test``, ...)."""
    return next((name for name in _SPLIT_DIRS[split] if name in names), None)


def _split_root(path: Path, split: str) -> Path | None:
    name = pick_split_dir({d.name for d in _subdirs(path)}, split)
    return path / name if name else None


def _class_dirs(root: Path) -> list[Path]:
    # Split folders were already stepped into by the caller, so every sub-folder here is a class.
    return _subdirs(root)


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))
