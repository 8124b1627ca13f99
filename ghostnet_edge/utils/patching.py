"""Library functions replaced for the length of a ``with`` block, and put back even when it fails.

The export speeds up a few library internals without changing a byte of what they make (TensorFlow's
flatbuffer packing and SavedModel reload in ``export/tflite``, onnxruntime's graph look-ups and weight
rounding in ``export/onnx``). Each module holds its own lock around :func:`swapped`, so that two threads
never replace the same functions at once; this module only does the replacing and the putting back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def swapped(*replacements: tuple[Any, str, Any]) -> Iterator[None]:
    """Each ``(owner, name, replacement)``: ``owner.name`` is ``replacement`` inside the block; on leaving
    it (normally or by an exception) every original is put back, in reverse order."""
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in replacements]
    try:
        for owner, name, replacement in replacements:
            setattr(owner, name, replacement)
        yield
    finally:
        for owner, name, original in reversed(originals):
            setattr(owner, name, original)
