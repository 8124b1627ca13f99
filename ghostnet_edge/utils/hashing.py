"""sha256 of a NumPy array's bytes, without copying an array that is already in the hashed layout."""

from __future__ import annotations

import hashlib

import numpy as np


def array_digest(arr: np.ndarray, dtype: type = np.float32) -> bytes:
    """sha256 digest of ``arr`` as ``dtype`` in C order. An array already in that form (a 150 MB batch of
    calibration tensors, a memory-mapped file) is hashed where it lies; ``tobytes()`` would copy it."""
    a = arr if arr.dtype == dtype and arr.flags.c_contiguous else np.ascontiguousarray(arr, dtype=dtype)
    return hashlib.sha256(memoryview(a).cast("B")).digest()
