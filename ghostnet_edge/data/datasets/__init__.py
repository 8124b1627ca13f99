"""Labelled image data sets from disk, all behind one small interface.

``open_dataset(source, split, spec)`` looks at ``source`` and picks the layout:

==================  ===========================================================================
``digits``          scikit-learn's bundled 8x8 digits, scaled to 32x32 RGB, seeded stratified
                    80/20 train/val split (ships with scikit-learn: nothing is downloaded)
``cifar10``         the CIFAR-10 JPEG tar found in ``$GHOSTEDGE_CIFAR_TAR`` or ``../shared/data``
``*.tar[.gz]``      extracted once into the cache; small same-size images (CIFAR) are also
                    decoded once into a uint8 ``.npy`` array that training reads
pickle batches      a folder with CIFAR-10 python batches (``data_batch_1..5``, ``test_batch``)
class folders       ``root/[split/]<class>/<image>``; classes are the sorted folder names
ImageNet folders    ``root/[split/]<wnid>/<image>`` plus ``imagenet_class_index.json``: labels are
                    the 1000 standard indices
flat wnid files     ``root/<wnid>_<name>.JPEG`` plus the class-index JSON (ImageNet samples)
flat other files    unlabelled images (label -1): fine for calibration, refused by evaluation
==================  ===========================================================================

Every data set has ``.samples`` (list of ``(path or array index, label)``), ``.classes`` (names),
``len()`` and ``ds[i] -> (float32 CHW array, int label)`` through the shared
:class:`~ghostnet_edge.data.transforms.Preprocess`. Training augmentation draws from a generator
seeded by ``(seed, epoch, i)``, so a sample looks the same whatever the batch order or rank count.

One module per job: ``base`` (the data set classes and the pure helpers on labels and class names),
``folders`` (folder layouts and the class index), ``digits``, ``cifar`` (pickle batches, the class
names, finding the tar) and ``archives`` (tar extraction and the decoded-array cache). This package
holds the dispatcher (``open_dataset``, ``detect_layout``) and re-exports the names callers import
from ``ghostnet_edge.data.datasets``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ghostnet_edge.data.datasets.archives import (
    _is_tar,
    default_cache_dir,
    extract_tar,
    tar_cache_folder,
    tar_dataset,
    tar_tree,
)
from ghostnet_edge.data.datasets.base import (
    ArrayDataset,
    FileDataset,
    ImageDataset,
    align_classes,
    balanced_indices,
    class_mapping,
    stratified_split,
)
from ghostnet_edge.data.datasets.cifar import (
    CIFAR10_CLASSES,
    _cifar_pickle_root,
    cifar_pickle_dataset,
    find_cifar_tar,
)
from ghostnet_edge.data.datasets.digits import digits_dataset
from ghostnet_edge.data.datasets.folders import (
    _SPLIT_DIRS,
    _WNID,
    _WNID_PREFIX,
    CLASS_INDEX_FILE,
    _class_dirs,
    _image_files,
    _split_root,
    folder_dataset,
    pick_split_dir,
    read_class_index,
)
from ghostnet_edge.data.transforms import Preprocess
from ghostnet_edge.errors import DataError

__all__ = [
    "CIFAR10_CLASSES", "CLASS_INDEX_FILE", "ArrayDataset", "FileDataset", "ImageDataset", "align_classes",
    "balanced_indices", "cifar_pickle_dataset", "class_mapping", "default_cache_dir", "detect_layout",
    "digits_dataset", "extract_tar", "find_cifar_tar", "folder_dataset", "open_dataset", "pick_split_dir",
    "read_class_index", "stratified_split", "tar_cache_folder", "tar_dataset", "tar_tree",
]


def open_dataset(
    source: str | Path,
    split: str = "val",
    spec: Any = None,
    train: bool = False,
    skip_bad_images: bool = False,
    *,
    preprocess: Preprocess | None = None,
    class_index: str | Path | None = None,
    cache_dir: str | Path | None = None,
    split_seed: int = 0,
    val_fraction: float = 0.2,
) -> ImageDataset:
    """Open ``source`` (a path, ``digits`` or ``cifar10``) for ``split`` ("train" | "val" | "test").

    ``spec`` (a ModelSpec or checkpoint meta) gives the preprocessing; ``train`` switches on the
    augmentation. ``split_seed``/``val_fraction`` only matter for ``digits``, whose split is made here.
    """
    if split not in _SPLIT_DIRS:
        raise DataError(f"unknown split {split!r}", "use --split train, val or test")
    if preprocess is None and spec is not None:
        preprocess = Preprocess.from_spec(spec, train=train)
    elif preprocess is not None:
        preprocess = preprocess.with_train(train)
    name = str(source)
    if name == "digits":
        return digits_dataset(split, preprocess, split_seed=split_seed, val_fraction=val_fraction)
    if name == "cifar10":
        source = find_cifar_tar()
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"data source {path} does not exist",
                        "pass a folder of images, a CIFAR-10 tar or pickle folder, 'digits' or 'cifar10'")
    if path.is_file():
        if _is_tar(path):
            return tar_dataset(path, split, preprocess, skip_bad_images, cache_dir=cache_dir)
        raise DataError(f"{path} is a file, not a data set",
                        "pass a folder of images (class sub-folders), a .tar of one, or a CIFAR pickle folder")
    return folder_dataset(path, split, preprocess, skip_bad_images, class_index=class_index)


def detect_layout(path: Path) -> str:
    """Name the layout of a folder: cifar10-pickle | class-folders | imagenet-folders | flat-wnid | flat."""
    path = Path(path)
    if _cifar_pickle_root(path) is not None:
        return "cifar10-pickle"
    root = _split_root(path, "val") or _split_root(path, "train") or path
    class_dirs = _class_dirs(root)
    if class_dirs:
        return "imagenet-folders" if all(_WNID.match(d.name) for d in class_dirs) else "class-folders"
    images = _image_files(root)
    if images and all(_WNID_PREFIX.match(p.name) for p in images):
        return "flat-wnid"
    return "flat"
