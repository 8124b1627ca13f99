"""Preprocessed image tensors, cached so repeated exports do not decode the same images again.

The cache key covers everything that changes the tensors: each file's path, size and modification
time, and the preprocessing description (size, resize, crop, mean/std, interpolation). Editing an
image, or exporting at another input size, therefore misses the cache instead of reusing stale data.
Entries are written atomically, so an interrupted export never leaves a truncated ``.npy`` behind, and
never changed in place afterwards (a rebuilt entry is a new file renamed over the old one). That is what
lets an export map an entry into memory instead of reading it (its converter process maps the same
pages): an entry truncated in place while mapped would stop the process that reads it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ghostnet_edge.errors import BadImageError, DataError, GhostEdgeError
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
                  loader: Callable[[Path], Any] | None = None,
                  allocate: Callable[[tuple[int, ...]], np.ndarray] | None = None) -> np.ndarray:
    """Decode and preprocess every file into one (N, ...) float32 array; unreadable ones are collected
    and named in one error.

    Each image is written into its row as soon as it is made (``allocate(shape)`` gives the array,
    for example the cache file mapped into memory): no list of per-image arrays to stack afterwards,
    which cost a second copy of the whole batch.
    """
    if loader is None:
        from ghostnet_edge.data import load_rgb as loader
    allocate = allocate or (lambda shape: np.empty(shape, np.float32))
    out: np.ndarray | None = None
    bad: list[str] = []
    for i, f in enumerate(files):
        try:
            x = np.asarray(preprocess(loader(Path(f))), dtype=np.float32)
        except BadImageError as exc:
            bad.append(f"{exc.path} ({exc.reason})")
            continue
        except GhostEdgeError:
            raise
        except (OSError, ValueError) as exc:  # a loader that does not wrap its errors
            bad.append(f"{f} ({exc})")
            continue
        if bad:
            continue  # the export stops at the end anyway: only the names of the bad files matter
        if out is None:
            out = allocate((len(files), *x.shape))
        elif x.shape != out.shape[1:]:
            raise DataError(f"{f} preprocessed to shape {x.shape}, the images before it to {out.shape[1:]}",
                            "the preprocessing must give every image the same size")
        out[i] = x
    if bad:
        named = "; ".join(bad[:_MAX_NAMED_BAD]) + (f"; and {len(bad) - _MAX_NAMED_BAD} more"
                                                     if len(bad) > _MAX_NAMED_BAD else "")
        raise DataError(f"{len(bad)} image(s) cannot be read: {named}",
                        "remove or replace these files (or convert them to JPEG/PNG) and run again")
    if out is None:
        raise DataError("no images to preprocess", "pass a folder with at least one image")
    return out


class _CacheEntry:
    """A new cache entry that the decoded images are written into directly, mapped into memory (no
    separate save), and renamed into place only once every image is in it.

    A cache that cannot take it (a read-only or full disk) only means the images stay in memory: the
    export must not fail for its cache. The file's blocks are reserved before mapping it, because writing
    through a mapping onto a full disk kills the process (SIGBUS) instead of raising an error.
    """

    def __init__(self, target: Path) -> None:
        self.target = target
        self.tmp: Path | None = None
        self.in_memory: np.ndarray | None = None  # without posix_fallocate (macOS): saved at commit

    def allocate(self, shape: tuple[int, ...]) -> np.ndarray:
        import tempfile

        try:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f".{self.target.name}.", suffix=".npy", dir=self.target.parent)
            os.close(fd)
            self.tmp = Path(name)
            if not hasattr(os, "posix_fallocate"):  # no way to reserve the blocks: decode into memory
                self.in_memory = np.empty(shape, np.float32)
                return self.in_memory
            arr = np.lib.format.open_memmap(self.tmp, mode="w+", dtype=np.float32, shape=shape)
            with open(self.tmp, "r+b") as fh:
                os.posix_fallocate(fh.fileno(), 0, os.fstat(fh.fileno()).st_size)
            return arr
        except OSError:
            self.discard()
            return np.empty(shape, np.float32)

    def commit(self) -> bool:
        """Rename the filled entry into place; False when it was not made or cannot be kept."""
        if self.tmp is None:
            return False
        try:
            if self.in_memory is not None:
                with open(self.tmp, "wb") as fh:
                    np.save(fh, self.in_memory, allow_pickle=False)
            os.chmod(self.tmp, 0o644)
            os.replace(self.tmp, self.target)
        except OSError:
            self.discard()
            return False
        self.tmp = None
        return True

    def discard(self) -> None:
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)
            self.tmp = None


def _cache_hit(target: Path, n: int) -> np.ndarray | None:
    """The cached tensors of ``n`` images at ``target``, mapped read-only; None when absent or unusable."""
    if not target.is_file():
        return None
    try:
        arr = np.load(target, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None  # unreadable entry: decode again and overwrite it
    if arr.dtype != np.float32 or arr.ndim != 4 or arr.shape[0] != n:
        return None
    os.utime(target)  # mark as recently used for pruning
    return arr


def calibration_tensors(files: Sequence[Path], preprocess: PreprocessLike, use_cache: bool = True,
                        cache_dir: Path | None = None,
                        loader: Callable[[Path], Any] | None = None) -> TensorBatch:
    """Preprocessed (N, 3, H, W) float32 tensors of ``files``, from the cache when possible.

    ``preprocess`` must be the evaluation preprocessing of the model being exported: calibration
    ranges fitted on differently scaled inputs would be wrong for every real input. With the cache the
    array is the cache file mapped read-only (other processes of the export map the same pages).
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
    if use_cache and (hit := _cache_hit(target, len(files))) is not None:
        return TensorBatch(hit, key, True, target)
    if not use_cache:
        return TensorBatch(decode_images(files, preprocess, loader), key, False, None)
    entry = _CacheEntry(target)
    try:
        arr = decode_images(files, preprocess, loader, entry.allocate)
        kept = entry.commit()
    finally:
        entry.discard()  # an image that cannot be read, Ctrl-C: no partial entry is left behind
    if not kept:
        return TensorBatch(arr, key, False, None)
    with contextlib.suppress(OSError):
        prune(root)
    # Still the same file (renamed, not copied; or, without posix_fallocate, the array that was saved):
    # read-only from here on, like a cache hit, since writing into it would change the cache entry.
    arr.flags.writeable = False
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
