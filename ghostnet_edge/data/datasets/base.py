"""The data set classes and the pure helpers every layout shares.

:class:`ImageDataset` (a list of ``(key, label)`` samples, class names, the shared preprocessing, the
seeded augmentation streams and the skip-or-raise handling of unreadable images), its two storage
forms :class:`FileDataset` (image files decoded on demand) and :class:`ArrayDataset` (a uint8 NHWC
array), and helpers that only look at labels and class names: ``balanced_indices``,
``stratified_split``, ``class_mapping`` and ``align_classes``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np

from ghostnet_edge.data.images import load_rgb
from ghostnet_edge.data.transforms import Preprocess
from ghostnet_edge.errors import BadImageError, DataError

# Tags that keep the data-order and augmentation random streams apart (SeedSequence pads with zeros,
# so distinct non-zero tags are needed rather than relying on list length).
_TAG_AUGMENT = 0xA5A5


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
