"""The model object a TFLite conversion step just packed, handed to the next step instead of its bytes
unpacked again (the same file, byte for byte).

After its MLIR conversion, ``TFLiteConverter.convert`` works on the flatbuffer in Python's object form:
it deduplicates the read-only buffers (unpack, edit, pack), then adds its conversion metadata (unpack
the bytes just packed, edit, pack), and ghostedge's metadata embedding unpacks that result once more.
Each unpack of a 20 MB GhostNet 1.0x model walks every tensor and operator through the generated
flatbuffers code, on the converter process's core, which the export's main process needs back
(``benchmarks/export_parts.py`` times a conversion with and without this: 2.27 s against 2.13 s on the
project's AMD EPYC, ``docs/results/export_parts_amd.md``).

While :func:`handed_over` is active, packing a model remembers the object with its bytes; the next unpack of
exactly those bytes (compared in full) gets that object, once, instead of a new one. A packed object is not
edited afterwards by the step that packed it (TensorFlow returns the bytes; ghostedge drops the object), so
the object handed over is the one unpacking would give, down to the bytes it packs to; the tests compare the
converted files with and without the hand-over.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from ghostnet_edge.utils.patching import swapped

_LOCK = threading.Lock()


class Handover:
    """The last packed model: its bytes and object, given out at most once."""

    def __init__(self) -> None:
        self._data: bytes | None = None
        self._obj: Any = None
        self.given = 0  # objects handed over instead of unpacked (the tests count them)

    def offer(self, data: bytes, obj: Any) -> None:
        self._data, self._obj = bytes(data), obj

    def take(self, data: bytes | bytearray) -> Any:
        """The object packed into exactly ``data``, if it is the last one packed and not yet taken; else None."""
        if self._data is None or len(data) != len(self._data) or data != self._data:
            return None
        obj, self._data, self._obj = self._obj, None, None
        self.given += 1
        return obj


@contextlib.contextmanager
def handed_over() -> Iterator[Handover]:
    """While active, TensorFlow's ``flatbuffer_utils`` pack and unpack go through one :class:`Handover`,
    which the caller may also :meth:`~Handover.take` from. Without TensorFlow's flatbuffer_utils (or with
    other signatures) it changes nothing."""
    handover = Handover()
    try:
        from tensorflow.lite.tools import flatbuffer_utils as fu
    except ImportError:
        yield handover
        return
    pack, unpack = getattr(fu, "convert_object_to_bytearray", None), getattr(fu, "convert_bytearray_to_object", None)
    if pack is None or unpack is None:
        yield handover
        return

    def packing(model_object: Any, extra_buffer: bytes = b"") -> bytes:
        data = pack(model_object, extra_buffer)
        if not extra_buffer:
            handover.offer(data, model_object)
        return data

    def unpacking(model_bytearray: Any) -> Any:
        obj = handover.take(model_bytearray)
        return obj if obj is not None else unpack(model_bytearray)

    with _LOCK, swapped((fu, "convert_object_to_bytearray", packing), (fu, "convert_bytearray_to_object", unpacking)):
        yield handover
