"""Where the export's images come from: a folder of image files, any data set layout ``data`` reads, or
images already in memory.

* A folder of image files (``--calib photos/``): the files are listed, drawn and decoded (with the
  decoded-tensor cache), as :mod:`ghostnet_edge.calib.sampler` does.
* Any other data set (``--calib cifar10-jpg.tar``, a CIFAR-10 pickle folder, ``cifar10``, ``digits``) is
  opened with :func:`ghostnet_edge.data.open_dataset` (its *training* split for calibration, its
  validation split for held-out checks), and so is an :class:`~ghostnet_edge.data.datasets.ImageDataset`
  or a uint8 ``(N, H, W, 3)`` array handed over in Python: the curve and the emulated-ARM measurement
  pass their images this way, nothing is written to disk and decoded again.

Either way the held-out set is drawn first with ``seed + 1``, then the calibration set with ``seed``
from what is left; a data set's samples are ordered as its image files would be listed (class name,
then position), so the same images give the same draw in both forms.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ghostnet_edge.errors import DataError

# Split of a data set each role reads: calibration fits ranges on training images; the checks hold out
# validation images.
ROLE_SPLITS = {"calibration": "train", "verification": "val", "validation": "val"}


def is_folder_of_images(source: Any) -> bool:
    """A path to a folder the file route handles (everything but a CIFAR pickle folder)."""
    if not isinstance(source, str | Path) or str(source) in ("digits", "cifar10"):
        return False
    path = Path(source)
    if not path.is_dir():
        return not path.exists()  # a missing folder: the file route names it in its error
    from ghostnet_edge.data.datasets import detect_layout

    return detect_layout(path) != "cifar10-pickle"


@dataclass(frozen=True)
class DatasetImageSet:
    """An ordered selection of a data set's samples, with the same interface as ``ImageSet``."""

    dataset: Any
    positions: tuple[int, ...]
    num_available: int
    num_requested: int
    warnings: tuple[str, ...] = field(default=())

    @property
    def root(self) -> str:
        return str(self.dataset.source)

    @property
    def count(self) -> int:
        return len(self.positions)

    @property
    def labels(self) -> tuple[str | None, ...]:
        ds = self.dataset
        return tuple(ds.classes[ds.samples[i][1]] if 0 <= ds.samples[i][1] < len(ds.classes) else None
                     for i in self.positions)

    @property
    def classes(self) -> list[str]:
        return sorted({lab for lab in self.labels if lab is not None})

    def list_sha256(self) -> str:
        names = "\n".join(self.dataset.describe_sample(i) for i in self.positions)
        return hashlib.sha256(names.encode("utf-8")).hexdigest()

    def summary(self) -> dict:
        return {"root": self.root, "count": self.count, "requested": self.num_requested,
                "available": self.num_available, "num_classes": len(self.classes),
                "list_sha256": self.list_sha256(), "warnings": list(self.warnings)}


def as_dataset(source: Any, role: str) -> Any:
    """``source`` (a data set, a uint8 NHWC array, a path or name ``open_dataset`` reads) as a data set
    whose samples are in file-listing order (class name, then position)."""
    from ghostnet_edge.data.datasets import ImageDataset, open_dataset
    from ghostnet_edge.data.datasets.base import ArrayDataset

    if isinstance(source, np.ndarray):
        if source.ndim != 4 or source.shape[-1] != 3 or source.dtype != np.uint8:
            raise DataError(f"{role} images given as an array of shape {source.shape} and type {source.dtype}",
                            "pass uint8 RGB images shaped (N, H, W, 3)")
        ds = ArrayDataset(source, [-1] * len(source), [], None, f"{role} array")
    elif isinstance(source, ImageDataset):
        ds = source
    else:
        ds = open_dataset(source, ROLE_SPLITS.get(role, "val"))
    if len(ds) == 0:
        raise DataError(f"the {role} data {ds.source} holds no images", "pass a data set with images")

    def key(i: int) -> tuple[str, int]:
        label = ds.samples[i][1]
        return (ds.classes[label] if 0 <= label < len(ds.classes) else "", i)
    return ds.select(sorted(range(len(ds)), key=key))


def draw_positions(total: int, n: int, seed: int, exclude: set[int] | frozenset[int] = frozenset()) -> list[int]:
    """A seeded draw of ``n`` of ``range(total)`` without replacement, skipping ``exclude``; sorted.

    The same permutation as :func:`ghostnet_edge.calib.sampler.draw` over a sorted file list.
    """
    candidates = [i for i in range(total) if i not in exclude]
    order = np.random.default_rng(seed).permutation(len(candidates))[: min(n, len(candidates))]
    return sorted(candidates[i] for i in order)


def split_dataset(calib: Any, num_calib: int, num_verify: int, seed: int, verify_source: Any = None,
                  ) -> tuple[DatasetImageSet, DatasetImageSet]:
    """The held-out and calibration draws of :func:`sampler.split_calibration_verification`, from data sets."""
    from ghostnet_edge.calib.sampler import _size_warnings

    cds = as_dataset(calib, "calibration")
    if verify_source is not None:
        vds = as_dataset(verify_source, "verification")
        n_verify = min(num_verify, len(vds))
    else:
        vds = cds
        if len(cds) < 2:
            raise DataError(f"calibration data {cds.source} has only {len(cds)} image; one is needed to calibrate "
                            "and another, held out, to verify", "add images, or pass --verify-data")
        n_verify = min(num_verify, len(cds) // 2)
    v_pos = draw_positions(len(vds), n_verify, seed + 1)
    v_warn = ([f"verifying on {n_verify} held-out image(s) instead of {num_verify}: the data set is small"]
              if n_verify < num_verify else [])
    verify = DatasetImageSet(vds, tuple(v_pos), len(vds), num_verify, tuple(v_warn))
    excluded = set(v_pos) if vds is cds else set()
    usable = len(cds) - len(excluded)
    if usable < 1:
        raise DataError(f"calibration data {cds.source} has no images left after holding out {len(excluded)} "
                        "for verification", "add images, or pass --verify-data")
    c_pos = draw_positions(len(cds), num_calib, seed, excluded)
    calib_set = DatasetImageSet(cds, tuple(c_pos), usable, num_calib,
                                tuple(_size_warnings(len(c_pos), num_calib, usable, Path(str(cds.source)))))
    return calib_set, verify


def image_source(source: Any, role: str) -> Any:
    """Every image of ``source`` as a set (``ImageSet`` for a folder, else ``DatasetImageSet``)."""
    if is_folder_of_images(source):
        from ghostnet_edge.calib.sampler import list_images, make_image_set

        files = list_images(source, role)
        return make_image_set(Path(source), files, len(files), len(files))
    ds = as_dataset(source, role)
    return DatasetImageSet(ds, tuple(range(len(ds))), len(ds), len(ds))


def draw_image_sets(cfg: Any, warnings: list[str]) -> tuple[Any, Any]:
    """``(calibration set or None, held-out set)`` for an export's config; their warnings are logged."""
    import logging

    from ghostnet_edge.calib.sampler import draw, list_images, make_image_set, split_calibration_verification

    log = logging.getLogger("ghostnet_edge.export")
    if cfg.calib is not None:
        if is_folder_of_images(cfg.calib) and (cfg.verify_data is None or is_folder_of_images(cfg.verify_data)):
            calib_set, verify_set = split_calibration_verification(cfg.calib, cfg.num_calib, cfg.num_verify,
                                                                   cfg.seed, verify_source=cfg.verify_data)
        else:
            calib_set, verify_set = split_dataset(cfg.calib, cfg.num_calib, cfg.num_verify, cfg.seed,
                                                  cfg.verify_data)
        for w in (*verify_set.warnings, *calib_set.warnings):
            warnings.append(w)
            log.warning(w)
        return calib_set, verify_set
    if is_folder_of_images(cfg.verify_data):
        files = list_images(cfg.verify_data, "verification")
        return None, make_image_set(Path(cfg.verify_data), draw(files, cfg.num_verify, cfg.seed + 1),
                                    cfg.num_verify, len(files))
    ds = as_dataset(cfg.verify_data, "verification")
    return None, DatasetImageSet(ds, tuple(draw_positions(len(ds), cfg.num_verify, cfg.seed + 1)), len(ds),
                                 cfg.num_verify)


def load_tensors(image_set: Any, preprocess: Any, use_cache: bool = True) -> Any:
    """Preprocessed ``(N, 3, H, W)`` float32 images of a set, as a ``TensorBatch``.

    Files go through the decoded-tensor cache; a data set's images are preprocessed one by one with the
    same function a decoded file goes through, so both forms give the same arrays.
    """
    from ghostnet_edge.calib.cache import TensorBatch, calibration_tensors

    if not isinstance(image_set, DatasetImageSet):
        return calibration_tensors(image_set.files, preprocess, use_cache=use_cache)
    from ghostnet_edge.errors import BadImageError

    ds, arrays, bad = image_set.dataset, [], []
    for i in image_set.positions:
        try:
            arrays.append(np.asarray(preprocess(ds.load_uint8(i)), dtype=np.float32))
        except BadImageError as exc:
            bad.append(f"{exc.path} ({exc.reason})")
    if bad:
        raise DataError(f"{len(bad)} image(s) cannot be read: {'; '.join(bad[:5])}"
                        + (f"; and {len(bad) - 5} more" if len(bad) > 5 else ""),
                        "remove or replace these files (or convert them to JPEG/PNG) and run again")
    return TensorBatch(np.stack(arrays), image_set.list_sha256(), False, None)
