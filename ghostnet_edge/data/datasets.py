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
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import re
import shutil
import tarfile
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ghostnet_edge.data.images import is_image_file, load_rgb
from ghostnet_edge.data.transforms import SMALL_INPUT_MAX, Preprocess
from ghostnet_edge.errors import BadImageError, DataError
from ghostnet_edge.utils.atomic import atomic_path, atomic_write_json, file_lock

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CLASS_INDEX_FILE = "imagenet_class_index.json"
_WNID = re.compile(r"^n\d{8}$")
_WNID_PREFIX = re.compile(r"^(n\d{8})_")
_SPLIT_DIRS = {
    "train": ("train", "training"),
    "val": ("val", "validation", "valid", "test"),
    "test": ("test", "val", "validation", "valid"),
}
_ALL_SPLIT_DIRS = frozenset(name for names in _SPLIT_DIRS.values() for name in names)
# Tags that keep the data-order and augmentation random streams apart (SeedSequence pads with zeros,
# so distinct non-zero tags are needed rather than relying on list length).
_TAG_AUGMENT = 0xA5A5
# Part of the decoded-array cache's file names: bump it when their content or JSON changes.
_ARRAY_CACHE_VERSION = "v1"


# --------------------------------------------------------------------------------------------------
# Data set classes
# --------------------------------------------------------------------------------------------------


class ImageDataset:
    """Base: a list of ``(key, label)`` samples, class names and the shared preprocessing."""

    layout = "base"

    def __init__(
        self,
        samples: Sequence[tuple[Any, int]],
        classes: Sequence[str],
        preprocess: Preprocess | None,
        source: str,
        skip_bad_images: bool = False,
    ) -> None:
        self.samples: list[tuple[Any, int]] = list(samples)
        self.classes: list[str] = list(classes)
        self.preprocess = preprocess
        self.source = source
        self.skip_bad_images = skip_bad_images
        self.bad_images: list[str] = []
        self.seed = 0
        self.epoch = 0
        # True when the source had no split folders, so every split is the same images: training then
        # holds out a seeded validation share itself.
        self.unsplit = False

    # ---- basics -----------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(source={self.source!r}, n={len(self)}, "
                f"classes={len(self.classes)}, train={self.train})")

    @property
    def train(self) -> bool:
        return bool(self.preprocess is not None and self.preprocess.train)

    @property
    def labels(self) -> np.ndarray:
        return np.fromiter((label for _, label in self.samples), dtype=np.int64, count=len(self.samples))

    @property
    def labelled(self) -> bool:
        return bool(self.classes) and all(label >= 0 for _, label in self.samples)

    def set_epoch(self, epoch: int, seed: int | None = None) -> None:
        """Choose the augmentation stream: sample ``i`` of epoch ``e`` is seeded by ``(seed, e, i)``."""
        self.epoch = int(epoch)
        if seed is not None:
            self.seed = int(seed)

    def sample_rng(self, index: int) -> np.random.Generator:
        """Generator for sample ``index`` in this epoch (random-resized-crop path)."""
        return np.random.default_rng([self.seed, self.epoch, _TAG_AUGMENT, int(index)])

    def crop_flip_table(self) -> np.ndarray:
        """Small-input augmentation parameters of every sample for this epoch (row ``i``: sample ``i``).

        One vectorised draw per epoch instead of a generator per sample: seeding a generator costs
        more than the augmentation itself.
        """
        key = (self.seed, self.epoch, len(self))
        if getattr(self, "_table_key", None) != key:
            rng = np.random.default_rng([self.seed, self.epoch, _TAG_AUGMENT])
            self._table = self._require_preprocess().draw_crop_flip(rng, len(self))
            self._table_key = key
        return self._table

    # ---- loading ----------------------------------------------------------------------------------

    def load_uint8(self, index: int) -> np.ndarray:
        """Decoded RGB image of sample ``index`` as uint8 HWC, before any geometry."""
        raise NotImplementedError

    def describe_sample(self, index: int) -> str:
        return f"{self.source}[{index}]"

    def _require_preprocess(self) -> Preprocess:
        if self.preprocess is None:
            raise ValueError("this data set was opened without a model spec; pass spec= or preprocess=")
        return self.preprocess

    def preprocess_images(self, images: np.ndarray | Sequence[np.ndarray], positions: Sequence[int]) -> np.ndarray:
        """Decoded uint8 HWC images of the samples at ``positions`` -> float32 NCHW (augmented if train)."""
        pre = self._require_preprocess()
        if not pre.train:
            return pre.eval_batch(images)
        if pre.small_input:
            params = self.crop_flip_table()[np.asarray(positions, dtype=np.int64)]
            return pre.finish(pre.crop_flip(pre.eval_geometry_batch(images), params))
        return np.stack([pre(img, self.sample_rng(i)) for img, i in zip(images, positions, strict=True)])

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        return self.preprocess_images([self.load_uint8(index)], [index])[0], int(self.samples[index][1])

    def load_batch(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Preprocessed ``(float32 NCHW, int64 labels)``; unreadable images are skipped or raise."""
        images, kept = [], []
        for i in indices:
            try:
                images.append(self.load_uint8(int(i)))
            except BadImageError:
                if not self.skip_bad_images:
                    raise
                name = self.describe_sample(int(i))
                if name not in self.bad_images:  # counted once, not once per epoch
                    self.bad_images.append(name)
                continue
            kept.append(int(i))
        labels = np.asarray([self.samples[i][1] for i in kept], dtype=np.int64)
        if not images:
            c, h, w = self._require_preprocess().input_size
            return np.zeros((0, c, h, w), np.float32), labels
        return self.preprocess_images(images, kept), labels

    # ---- derived data sets ------------------------------------------------------------------------

    def select(self, indices: Sequence[int]) -> ImageDataset:
        """A data set of the given samples (same images, classes and preprocessing)."""
        out = copy.copy(self)
        out.samples = [self.samples[int(i)] for i in indices]
        out.bad_images = []
        return out

    def subset(self, n: int | None, seed: int = 0) -> ImageDataset:
        """At most ``n`` samples, balanced over classes and chosen with ``seed`` (None: all)."""
        if n is None or n >= len(self):
            return self
        if n <= 0:
            raise DataError(f"asked for a subset of {n} images", "pass a positive --limit")
        return self.select(balanced_indices(self.labels, n, seed))

    def with_preprocess(self, preprocess: Preprocess | None) -> ImageDataset:
        out = copy.copy(self)
        out.preprocess = preprocess
        return out

    def relabel(self, class_names: Sequence[str], mapping: np.ndarray) -> ImageDataset:
        out = copy.copy(self)
        out.samples = [(key, int(mapping[label])) for key, label in self.samples]
        out.classes = list(class_names)
        return out


class FileDataset(ImageDataset):
    """Samples are image file paths, decoded on demand with :func:`load_rgb`."""

    layout = "files"

    def load_uint8(self, index: int) -> np.ndarray:
        return np.asarray(load_rgb(self.samples[index][0]))

    def describe_sample(self, index: int) -> str:
        return str(self.samples[index][0])


class ArrayDataset(ImageDataset):
    """Samples index a uint8 ``NHWC`` array held in memory (or memory-mapped from the cache)."""

    layout = "array"

    def __init__(self, images: np.ndarray, labels: Sequence[int], classes: Sequence[str],
                 preprocess: Preprocess | None, source: str, skip_bad_images: bool = False,
                 names: Sequence[str] | None = None) -> None:
        super().__init__([(i, int(lab)) for i, lab in enumerate(labels)], classes, preprocess, source,
                         skip_bad_images)
        self.images = images
        self.names = list(names) if names is not None else None

    def load_uint8(self, index: int) -> np.ndarray:
        return self.images[self.samples[index][0]]

    def describe_sample(self, index: int) -> str:
        key = self.samples[index][0]
        return self.names[key] if self.names else f"{self.source}[{key}]"

    def load_batch(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        # Arrays cannot hold a bad image, so the whole batch is gathered in one fancy-index.
        keys = np.fromiter((self.samples[int(i)][0] for i in indices), dtype=np.int64)
        labels = np.fromiter((self.samples[int(i)][1] for i in indices), dtype=np.int64)
        return self.preprocess_images(self.images[keys], indices), labels


# --------------------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------------------


def balanced_indices(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` sorted indices spread evenly over classes: classes take turns, each in a seeded order."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    chosen: list[int] = []
    depth = 0
    while len(chosen) < n:
        for members in per_class:
            if depth < len(members) and len(chosen) < n:
                chosen.append(int(members[depth]))
        depth += 1
    return np.sort(np.asarray(chosen, dtype=np.int64))


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded per-class split into sorted (train, val) indices; each class keeps >= 1 train image."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError("val_fraction must be between 0 and 1")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_val = min(len(members) - 1, max(1, int(round(len(members) * val_fraction)))) if len(members) > 1 else 0
        val.extend(members[:n_val].tolist())
        train.extend(members[n_val:].tolist())
    return np.sort(np.asarray(train, dtype=np.int64)), np.sort(np.asarray(val, dtype=np.int64))


def class_mapping(data_classes: Sequence[str], expected: Sequence[str], what: str = "the checkpoint") -> np.ndarray:
    """Array mapping data set label -> index in ``expected``; DataError naming any mismatch.

    A data set may hold a subset of the expected classes in any order (e.g. 10 ImageNet class
    folders for a 1000-class model); names the model does not know are an error.
    """
    data_classes, expected = list(data_classes), list(expected)
    if data_classes == expected:
        return np.arange(len(expected), dtype=np.int64)
    index = {name: i for i, name in enumerate(expected)}
    unknown = [name for name in data_classes if name not in index]
    if unknown:
        missing = [name for name in expected if name not in set(data_classes)]
        raise DataError(
            f"class names of the data do not match {what}: {len(unknown)} unknown to it "
            f"({_preview(unknown)}); {len(missing)} of its classes absent from the data ({_preview(missing)})",
            "use data with the class folders the model was trained on (same names), "
            "or train/fine-tune a model on this data",
        )
    return np.asarray([index[name] for name in data_classes], dtype=np.int64)


def align_classes(dataset: ImageDataset, class_names: Sequence[str] | None, what: str = "the checkpoint") -> ImageDataset:
    """Relabel ``dataset`` into the class order of a model (``class_names`` None: unchanged)."""
    if not class_names:
        return dataset
    mapping = class_mapping(dataset.classes, class_names, what)
    if np.array_equal(mapping, np.arange(len(mapping))) and len(mapping) == len(class_names):
        return dataset
    return dataset.relabel(class_names, mapping)


def _preview(names: Sequence[str], k: int = 8) -> str:
    shown = ", ".join(repr(n) for n in list(names)[:k])
    return shown + (f", ... {len(names) - k} more" if len(names) > k else "") if names else "none"


# --------------------------------------------------------------------------------------------------
# open_dataset
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# digits (scikit-learn, bundled)
# --------------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.empty((len(digits.images), 32, 32, 3), dtype=np.uint8)
    for i, img in enumerate(digits.images):  # values 0..16
        small = Image.fromarray(np.rint(img * (255.0 / 16.0)).astype(np.uint8))
        big = np.asarray(small.resize((32, 32), Image.BILINEAR))
        images[i] = big[:, :, None]
    images.setflags(write=False)
    return images, digits.target.astype(np.int64)


def digits_dataset(split: str, preprocess: Preprocess | None, split_seed: int = 0,
                   val_fraction: float = 0.2) -> ArrayDataset:
    """scikit-learn's 1,797 8x8 digits as 32x32 RGB; a stratified split fixed by ``split_seed``.

    The split seed is separate from the training seed on purpose: a seed sweep should measure the
    spread caused by training, on the same validation images.
    """
    images, labels = _digits_arrays()
    train_idx, val_idx = stratified_split(labels, val_fraction, split_seed)
    idx = train_idx if split == "train" else val_idx
    ds = ArrayDataset(images[idx], labels[idx], [str(d) for d in range(10)], preprocess, "digits")
    ds.layout = "digits"
    return ds


# --------------------------------------------------------------------------------------------------
# CIFAR-10 python pickle batches
# --------------------------------------------------------------------------------------------------


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickle plain containers and numpy arrays only: a data file must not be able to run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),                       # bytes in protocol-2 pickles written by Python 3
        ("__builtin__", "bytes"), ("builtins", "bytes"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


def _load_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            obj = _ArrayOnlyUnpickler(fh, encoding="bytes").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise DataError(f"cannot read CIFAR batch {path}: {exc}",
                        "re-extract cifar-10-python.tar.gz; batches must be the original python pickles") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{path} is not a CIFAR batch (a pickled dict)", "point at cifar-10-batches-py")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _cifar_pickle_root(path: Path) -> Path | None:
    for candidate in (path, path / "cifar-10-batches-py"):
        if (candidate / "test_batch").is_file() or (candidate / "data_batch_1").is_file():
            return candidate
    return None


def cifar_pickle_dataset(root: Path, split: str, preprocess: Preprocess | None) -> ArrayDataset:
    """CIFAR-10 python batches: ``data`` rows are 3072 bytes, the R, G then B 32x32 planes."""
    files = sorted(root.glob("data_batch_*")) if split == "train" else [root / "test_batch"]
    files = [f for f in files if f.is_file()]
    if not files:
        raise DataError(f"{root} has no {'data_batch_*' if split == 'train' else 'test_batch'} file",
                        "point at the extracted cifar-10-batches-py folder")
    images, labels = [], []
    for f in files:
        batch = _load_pickle(f)
        try:
            data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            labels.extend(int(v) for v in batch["labels"])
        except (KeyError, ValueError) as exc:
            raise DataError(f"{f} is not a CIFAR-10 batch: {exc}", "point at cifar-10-batches-py") from exc
        images.append(data.transpose(0, 2, 3, 1))
    classes = list(CIFAR10_CLASSES)
    if (root / "batches.meta").is_file():
        meta = _load_pickle(root / "batches.meta")
        names = meta.get("label_names")
        if names:
            classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    stacked = np.ascontiguousarray(np.concatenate(images))
    if len(stacked) != len(labels):
        raise DataError(f"CIFAR batches in {root} have {len(stacked)} images but {len(labels)} labels",
                        "re-extract the batches")
    ds = ArrayDataset(stacked, labels, classes, preprocess, str(root))
    ds.layout = "cifar10-pickle"
    return ds


# --------------------------------------------------------------------------------------------------
# Tar archives (the CIFAR-10 JPEG tree) with an extraction + decoded-array cache
# --------------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$GHOSTEDGE_CACHE`` or ``~/.cache/ghostedge``."""
    return Path(os.environ.get("GHOSTEDGE_CACHE") or Path.home() / ".cache" / "ghostedge")


def find_cifar_tar() -> Path:
    """The CIFAR-10 JPEG tar: ``$GHOSTEDGE_CIFAR_TAR``, else ``../shared/data`` near cwd or the repo."""
    env = os.environ.get("GHOSTEDGE_CIFAR_TAR")
    if env:
        if not Path(env).is_file():
            raise DataError(f"GHOSTEDGE_CIFAR_TAR={env} does not exist", "point it at cifar10-jpg.tar")
        return Path(env)
    repo = Path(__file__).resolve().parents[2]
    tried = []
    for base in (Path.cwd(), repo):
        candidate = (base / ".." / "shared" / "data" / "cifar10-jpg.tar").resolve()
        tried.append(str(candidate))
        if candidate.is_file():
            return candidate
    raise DataError(f"cannot find the CIFAR-10 tar (looked at {', '.join(dict.fromkeys(tried))})",
                    "set GHOSTEDGE_CIFAR_TAR=/path/to/cifar10-jpg.tar or pass the tar's path as --data")


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
