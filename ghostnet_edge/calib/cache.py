"""Preprocessed image tensors, cached so repeated exports do not decode the same images again.

The cache key covers everything that changes the tensors: each file's path, size and modification
time, and the preprocessing description (size, resize, crop, mean/std, interpolation). Editing an
image, or exporting at another input size, therefore misses the cache instead of reusing stale data.
Entries are written atomically, so an interrupted export never leaves a truncated ``.npy`` behind.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ghostnet_edge.errors import BadImageError, DataError, GhostEdgeError
from ghostnet_edge.utils.atomic import atomic_path
from ghostnet_edge.utils.paths import cache_home

# Oldest entries beyond this many are removed: at 224x224 one entry of 256 images is ~150 MB.
MAX_ENTRIES = 8
_MAX_NAMED_BAD = 10


class PreprocessLike(Protocol):
    """What the data stage's ``Preprocess`` offers: image -> float32 CHW, and a description."""

    def __call__(self, image: Any) -> np.ndarray: ...

    def describe(self) -> dict: ...


@dataclass(frozen=True)
class TensorBatch:
    """Preprocessed images stacked as (N, 3, H, W) float32, and whether they came from the cache."""

    array: np.ndarray
    key: str
    cache_hit: bool
    cache_file: Path | None


def cache_root() -> Path:
    """``$GHOSTEDGE_CACHE/calib`` when set, else ``~/.cache/ghostedge/calib``."""
    return cache_home() / "calib"


def cache_key(files: Sequence[Path], description: dict) -> str:
    """sha256 over (resolved path, size, mtime_ns) of every file, in order, and the preprocessing."""
    h = hashlib.sha256()
    for f in files:
        st = Path(f).stat()
        h.update(f"{Path(f).resolve().as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    h.update(json.dumps(description, sort_keys=True, default=str).encode())
    return h.hexdigest()


def decode_images(files: Sequence[Path], preprocess: Callable[[Any], np.ndarray],
                  loader: Callable[[Path], Any] | None = None) -> np.ndarray:
    """Decode and preprocess every file; unreadable ones are collected and named in one error."""
    if loader is None:
        from ghostnet_edge.data import load_rgb as loader
    arrays: list[np.ndarray] = []
    bad: list[str] = []
    for f in files:
        try:
            arrays.append(np.asarray(preprocess(loader(Path(f))), dtype=np.float32))
        except BadImageError as exc:
            bad.append(f"{exc.path} ({exc.reason})")
        except GhostEdgeError:
            raise
        except (OSError, ValueError) as exc:  # a loader that does not wrap its errors
            bad.append(f"{f} ({exc})")
    if bad:
        named = "; ".join(bad[:_MAX_NAMED_BAD]) + (f"; and {len(bad) - _MAX_NAMED_BAD} more"
                                                     if len(bad) > _MAX_NAMED_BAD else "")
        raise DataError(f"{len(bad)} image(s) cannot be read: {named}",
                        "remove or replace these files (or convert them to JPEG/PNG) and run again")
    if not arrays:
        raise DataError("no images to preprocess", "pass a folder with at least one image")
    return np.stack(arrays).astype(np.float32, copy=False)


def calibration_tensors(files: Sequence[Path], preprocess: PreprocessLike, use_cache: bool = True,
                        cache_dir: Path | None = None,
                        loader: Callable[[Path], Any] | None = None) -> TensorBatch:
    """Preprocessed (N, 3, H, W) float32 tensors of ``files``, from the cache when possible.

    ``preprocess`` must be the evaluation preprocessing of the model being exported: calibration
    ranges fitted on differently scaled inputs would be wrong for every real input.
    """
    files = [Path(f) for f in files]
    if not files:
        raise DataError("no images were selected", "pass a folder with at least one image")
    for f in files:
        if not f.is_file():
            raise DataError(f"image {f} disappeared while exporting", "run again")
    key = cache_key(files, preprocess.describe())
    root = cache_dir if cache_dir is not None else cache_root()
    target = root / f"{key}.npy"
    if use_cache and target.is_file():
        try:
            arr = np.load(target, allow_pickle=False)
            if arr.dtype == np.float32 and arr.ndim == 4 and arr.shape[0] == len(files):
                os.utime(target)  # mark as recently used for pruning
                return TensorBatch(arr, key, True, target)
        except (OSError, ValueError):
            pass  # unreadable entry: decode again and overwrite it
    arr = decode_images(files, preprocess, loader)
    if not use_cache:
        return TensorBatch(arr, key, False, None)
    try:
        with atomic_path(target, suffix=".npy") as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, arr, allow_pickle=False)
        prune(root)
    except (OSError, GhostEdgeError):
        # A read-only or full cache must not fail the export: the tensors are already in memory.
        return TensorBatch(arr, key, False, None)
    return TensorBatch(arr, key, False, target)


def prune(root: Path, max_entries: int = MAX_ENTRIES, pattern: str = "*.npy") -> list[Path]:
    """Remove the least recently used entries beyond ``max_entries``; returns what was removed."""
    entries = sorted(root.glob(pattern), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    removed = []
    for old in entries[max_entries:]:
        try:
            old.unlink()
            removed.append(old)
        except OSError:
            continue
    return removed
