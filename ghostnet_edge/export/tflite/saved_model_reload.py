"""Convert without TensorFlow loading back, as a Python object, the SavedModel it has just written.

``TFLiteConverter.from_concrete_functions(...).convert()`` saves the function as a SavedModel in a
temporary folder and hands that folder to the MLIR converter, which reads it itself. Before that, the
Python side also loads the whole SavedModel back into a trackable object (``saved_model.load``) and
uses it for one thing only: its graph debug info, which ``_validate_inputs`` passes to the converter
for source locations in error messages. Without that object it takes the debug info from the concrete
function's own graph, the graph the SavedModel was written from. The converted model is the same,
byte for byte (``tests/test_export_tflite.py`` converts with and without), and the converter process's
core is spared the load (``benchmarks/export_parts.py`` times the FP32 conversion of GhostNet 1.0x both
ways: ``docs/results/export_parts_amd.md``).

While :func:`skip_saved_model_reload` is active that load returns an object without debug info. With
another TensorFlow layout (no ``lite._load``) it changes nothing.
"""

from __future__ import annotations

import contextlib
import threading
import types
from collections.abc import Iterator
from typing import Any

from ghostnet_edge.utils.patching import swapped

_LOCK = threading.Lock()


@contextlib.contextmanager
def skip_saved_model_reload() -> Iterator[list[int]]:
    """While active, the TFLite converter's reload of its temporary SavedModel is skipped; yields a list
    that gets one entry per skipped reload (the tests count them)."""
    skipped: list[int] = []
    try:
        from tensorflow.lite.python import lite
    except ImportError:
        yield skipped
        return
    load = getattr(lite, "_load", None)
    if load is None:
        yield skipped
        return

    def no_reload(*_args: Any, **_kwargs: Any) -> Any:
        skipped.append(1)
        return types.SimpleNamespace()  # no graph_debug_info: the concrete function's graph supplies it

    with _LOCK, swapped((lite, "_load", no_reload)):
        yield skipped
