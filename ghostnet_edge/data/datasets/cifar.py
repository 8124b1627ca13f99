"""CIFAR-10: the class names, the python pickle batches and where the JPEG tar is found.

Pickle batches (``data_batch_1..5``, ``test_batch``) are read with an unpickler that only accepts plain
containers and numpy arrays, since a data file must not be able to run code. ``find_cifar_tar`` locates
the CIFAR-10 JPEG tar that :mod:`~ghostnet_edge.data.datasets.archives` opens for ``cifar10``.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ghostnet_edge.data.datasets.base import ArrayDataset
from ghostnet_edge.data.transforms import Preprocess
from ghostnet_edge.errors import DataError

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


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


def find_cifar_tar() -> Path:
    """The CIFAR-10 JPEG tar: ``$GHOSTEDGE_CIFAR_TAR``, else ``../shared/data`` near cwd or the repo."""
    env = os.environ.get("GHOSTEDGE_CIFAR_TAR")
    if env:
        if not Path(env).is_file():
            raise DataError(f"GHOSTEDGE_CIFAR_TAR={env} does not exist", "point it at cifar10-jpg.tar")
        return Path(env)
    # ghostnet_edge/data/datasets/cifar.py: the repository is three folders up.
    repo = Path(__file__).resolve().parents[3]
    tried = []
    for base in (Path.cwd(), repo):
        candidate = (base / ".." / "shared" / "data" / "cifar10-jpg.tar").resolve()
        tried.append(str(candidate))
        if candidate.is_file():
            return candidate
    raise DataError(f"cannot find the CIFAR-10 tar (looked at {', '.join(dict.fromkeys(tried))})",
                    "set GHOSTEDGE_CIFAR_TAR=/path/to/cifar10-jpg.tar or pass the tar's path as --data")
