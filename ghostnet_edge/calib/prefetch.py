"""Decode an export's image sets into the tensor cache in a process of its own, ahead of need.

An export's main process spends its first seconds importing PyTorch and onnxruntime and exporting the
ONNX model: Python on one core. Its image decoding used to follow (the ``preprocess`` stage of
``benchmarks/export_time.py``: 0.74-1.90 s for 288 images on the project's AMD EPYC). Started as soon as
the images are drawn, this process decodes them on the other core meanwhile, into the
decoded-tensor cache (:mod:`ghostnet_edge.calib.cache`); the main process then finds every set there
and maps it. The result is the same bytes either way: the same function decodes into the same cache
entry, and a set the prefetch did not finish is decoded by the main process as before.

It only ever adds cache entries, atomically. A failure of any kind (an unreadable image, a full disk,
the process killed) leaves the main process to decode, and report, as it would have without it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# What a Preprocess is rebuilt from in the child: its evaluation fields (training augmentation is off).
_FIELDS = ("input_size", "mean", "std", "resize_size", "interpolation")


class Prefetch:
    """The child decoding image sets; :meth:`wait` before reading them from the cache."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc

    def wait(self, timeout: float = 300.0) -> bool:
        """Wait for the child; True when it decoded every set (else the caller decodes what is missing)."""
        try:
            return self.proc.wait(timeout=timeout) == 0
        except subprocess.TimeoutExpired:
            self.stop()
            return False

    def stop(self) -> None:
        """Stop the child (an export that failed or was interrupted); it removes its unfinished entry."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start(file_sets: Sequence[Sequence[Path]], preprocess: Any) -> Prefetch | None:
    """Start decoding ``file_sets`` (lists of image files) with ``preprocess`` into the cache; None when
    there is nothing to decode or the child cannot start."""
    sets = [[str(f) for f in files] for files in file_sets if files]
    if not sets:
        return None
    msg = {"sets": sets, "preprocess": {k: getattr(preprocess, k) for k in _FIELDS}}
    from ghostnet_edge.utils.paths import module_argv, package_env

    try:
        proc = subprocess.Popen(module_argv("ghostnet_edge.calib.prefetch"), stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=package_env(), text=True)
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(msg))
        proc.stdin.close()
    except OSError:
        return None
    return Prefetch(proc)


def _child() -> int:
    # SIGTERM (Prefetch.stop) unwinds like Ctrl-C, so the cache entry being written is removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # Yield to the export's main process (its critical path), share the other core with the converter's
    # TensorFlow import (export/tflite/worker.py: IMPORT_NICENESS, the same value).
    with contextlib.suppress(OSError):
        os.nice(5)
    from ghostnet_edge.calib.cache import calibration_tensors
    from ghostnet_edge.data import Preprocess

    msg = json.loads(sys.stdin.read())
    pre = Preprocess(**{k: tuple(v) if isinstance(v, list) else v for k, v in msg["preprocess"].items()})
    for files in msg["sets"]:
        with contextlib.suppress(Exception):  # the main process decodes, and reports, what failed here
            calibration_tensors([Path(f) for f in files], pre, use_cache=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(_child())
