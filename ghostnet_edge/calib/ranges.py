"""Activation ranges for INT8: one calibration pass, shared by every quantizer, cached on disk.

Each quantizer used to calibrate on its own: onnxruntime ran its calibrator over the FP32 ONNX model,
and TensorFlow's converter ran its (single-threaded, logging) interpreter over the float ``.tflite``,
about 30 times the model's own compute for the same numbers twice over. Here the ranges are collected
once, running the FP32 ONNX model with graph optimisations on, in batches, on every thread it is given:
MinMax reduced inside the graph (:mod:`ghostnet_edge.calib.minmax`), Entropy and Percentile with
onnxruntime's own histogram calibrators. The result,
a range ``(lowest, highest)`` per ONNX tensor, then goes to both quantizers: onnxruntime's
``quantize_static`` takes it as precomputed calibration data, and the TFLite converter gets it
written into its calibrated flatbuffer (see :mod:`ghostnet_edge.export.tflite.ranges`). The two INT8
models therefore share one set of ranges, whatever the calibration method.

Ranges are cached by (FP32 model bytes, calibration tensor bytes, method, onnxruntime version), so a
repeated export of the same model on the same images skips the pass.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ghostnet_edge.errors import ExportError, GhostEdgeError, require
from ghostnet_edge.utils.atomic import atomic_write_json
from ghostnet_edge.utils.hashing import array_digest
from ghostnet_edge.utils.paths import cache_home

CALIB_METHODS = ("minmax", "entropy", "percentile")
_ORT_METHOD = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
# Batches larger than one make calibration several times faster; the MinMax/histogram collectors
# reduce over the batch axis, so the ranges are the same as feeding images one at a time.
CALIB_BATCH = 8
_FORMAT = 2   # bump when the cached file's meaning changes
MAX_CACHED = 256  # ranges files (~20 KB each) kept; the least recently used beyond are removed


@dataclass
class TensorRanges:
    """``(lowest, highest)`` of every calibrated tensor of one FP32 ONNX model, by tensor name."""

    method: str
    ranges: dict[str, tuple[float, float]]
    num_images: int
    key: str = ""
    cache_hit: bool = False
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    calib_sha256: str = ""  # of the calibration tensors as given (float32, C order): their provenance

    def to_ort(self) -> Any:
        """A fresh onnxruntime ``TensorsData`` (its quantizer edits the one it is given)."""
        from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData

        method = getattr(CalibrationMethod, _ORT_METHOD[self.method])
        return TensorsData(method, {name: TensorData(lowest=np.float32(lo), highest=np.float32(hi))
                                    for name, (lo, hi) in self.ranges.items()})

    def to_json(self) -> dict[str, Any]:
        return {"format": _FORMAT, "method": self.method, "num_images": self.num_images,
                "ranges": {k: [float(lo), float(hi)] for k, (lo, hi) in sorted(self.ranges.items())}}


def check_method(method: str) -> str:
    if method not in CALIB_METHODS:
        raise GhostEdgeError(f"unknown calibration method {method!r}", f"choose one of: {', '.join(CALIB_METHODS)}")
    return method


def ranges_cache_dir() -> Path:
    """``$GHOSTEDGE_CACHE/ranges`` when set, else ``~/.cache/ghostedge/ranges``."""
    return cache_home() / "ranges"


def ranges_key(model_bytes: bytes, calib: np.ndarray, method: str, runtime_version: str,
               calib_digest: bytes | None = None) -> str:
    """sha256 over everything the ranges depend on: the model, the images, the method, the calibrator.
    ``calib_digest``: :func:`array_digest` of ``calib``, when the caller has it already."""
    h = hashlib.sha256()
    h.update(hashlib.sha256(model_bytes).digest())
    h.update(repr(tuple(calib.shape)).encode())
    h.update(calib_digest if calib_digest is not None else array_digest(calib))
    h.update(f"{method}\0onnxruntime {runtime_version}\0format {_FORMAT}".encode())
    return h.hexdigest()


def _load_cached(path: Path, method: str) -> TensorRanges | None:
    try:
        d = json.loads(path.read_text())
        if d.get("format") != _FORMAT or d.get("method") != method:
            return None
        ranges = {k: (float(np.float32(v[0])), float(np.float32(v[1]))) for k, v in d["ranges"].items()}
        return TensorRanges(method, ranges, int(d["num_images"]))
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None  # unreadable entry: collect again and overwrite it


class ArrayDataReader:
    """onnxruntime ``CalibrationDataReader`` over an (N, 3, H, W) float32 array, in fixed batches.

    Duck-typed (``get_next``/``rewind``/iteration) so building one does not import onnxruntime;
    onnxruntime's reader ABC accepts any class with ``get_next`` through its subclass hook.
    """

    def __init__(self, array: np.ndarray, input_name: str = "input", batch_size: int = CALIB_BATCH) -> None:
        if array.ndim != 4 or array.shape[0] == 0:
            raise ValueError(f"expected a non-empty (N, C, H, W) array, got shape {array.shape}")
        self.array = np.ascontiguousarray(array, dtype=np.float32)
        self.input_name = input_name
        self.batch_size = max(1, int(batch_size))
        self._pos = 0
        self._end = len(self.array)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._pos >= self._end:
            return None
        batch = self.array[self._pos:min(self._pos + self.batch_size, self._end)]
        self._pos += self.batch_size
        return {self.input_name: batch}

    def rewind(self) -> None:
        self._pos, self._end = 0, len(self.array)

    def set_range(self, start_index: int, end_index: int) -> None:
        """Restrict to batches ``[start_index, end_index)``."""
        self._pos = start_index * self.batch_size
        self._end = min(end_index * self.batch_size, len(self.array))

    def __len__(self) -> int:
        return -(-len(self.array) // self.batch_size)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        self.rewind()
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


@contextlib.contextmanager
def optimized_calibration_sessions(threads: int | None) -> Iterator[None]:
    """Let onnxruntime's calibrators run their augmented model with graph optimisations on.

    ``CalibraterBase.create_inference_session`` hard-codes ``ORT_DISABLE_ALL``, which keeps onnxruntime
    from using its blocked (NCHWc) convolution kernels: calibrating GhostNet 1.0x at 224 on 64 images
    took 18.3 s that way and 11.0 s with ``ORT_ENABLE_ALL``, with every tensor range equal to 1e-6
    (the optimisations do not touch the tensors the calibrator reads: they are graph outputs). There is
    no public option for this, so the method is swapped for the duration of one pass.
    """
    import onnxruntime
    from onnxruntime.quantization import calibrate

    original = getattr(calibrate.CalibraterBase, "create_inference_session", None)
    if original is None:  # another onnxruntime layout: leave it alone (slower, same ranges)
        yield
        return

    from ghostnet_edge.calib.minmax import session_options

    def create_inference_session(self: Any) -> None:
        self.infer_session = onnxruntime.InferenceSession(
            self.augmented_model_path, sess_options=session_options(threads), providers=self.execution_providers)

    calibrate.CalibraterBase.create_inference_session = create_inference_session
    try:
        yield
    finally:
        calibrate.CalibraterBase.create_inference_session = original


def activation_inputs(model: Any) -> dict[str, str]:
    """Tensors read only by one Relu or Clip (tensor -> that node's output).

    onnxruntime's quantizer gives such a tensor its activation's output range (``adjust_tensor_ranges``:
    values the activation clamps away need no codes), and TFLite fuses the activation into the op that
    makes it, so neither reads the tensor's own range. Not measuring them keeps onnxruntime's Conv+Relu
    fusions in the calibration graph (benchmarks/calibration_pass.py: 4.1 s -> 3.3 s for GhostNet 1.0x
    at 224 on 256 images, 2 cores).
    """
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in model.graph.output}
    return {name: nodes[0].output[0] for name, nodes in consumers.items()
            if len(nodes) == 1 and nodes[0].op_type in ("Relu", "Clip") and nodes[0].input[0] == name
            and name not in outputs}


@contextlib.contextmanager
def _skip_tensors(skip: set[str]) -> Iterator[None]:
    """For one pass, onnxruntime's calibrators leave the tensors in ``skip`` unmeasured."""
    from onnxruntime.quantization import calibrate

    original = getattr(calibrate.CalibraterBase, "select_tensors_to_calibrate", None)
    if original is None or not skip:
        yield
        return

    def select_tensors_to_calibrate(self: Any, model: Any) -> Any:
        tensors, value_infos = original(self, model)
        return tensors - skip, value_infos

    calibrate.CalibraterBase.select_tensors_to_calibrate = select_tensors_to_calibrate
    try:
        yield
    finally:
        calibrate.CalibraterBase.select_tensors_to_calibrate = original


def _input_name(model: Any) -> str:
    inits = {i.name for i in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in inits]
    if len(names) != 1:
        raise ExportError(f"the ONNX model has {len(names)} inputs; calibration feeds exactly one image input",
                          "export a single-input image classifier")
    return names[0]


@contextlib.contextmanager
def quiet_onnxruntime() -> Iterator[None]:
    """onnxruntime's calibrators and quantizer print progress and log advice to the root logger; hide both."""
    import io
    import logging

    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(logging.NOTSET)


def _collect(model_path: Path, calib: np.ndarray, method: str,
             threads: int | Callable[[], int] | None) -> dict[str, tuple[float, float]]:
    onnx = require("onnx", "onnx", "INT8 calibration")
    model = onnx.load(str(model_path), load_external_data=False)
    skipped = activation_inputs(model)
    if method == "minmax":  # reduced in the graph (calib/minmax.py): the same ranges in half the time
        from ghostnet_edge.calib.minmax import collect_minmax

        out = collect_minmax(onnx.shape_inference.infer_shapes(model), calib, _input_name(model), skipped,
                             threads, CALIB_BATCH)
    else:
        out = _collect_histograms(model_path, model, calib, method, threads() if callable(threads) else threads,
                                  set(skipped))
    for name, activation_out in skipped.items():  # what onnxruntime's quantizer would set for them
        if activation_out in out:
            out[name] = out[activation_out]
    return out


def _collect_histograms(model_path: Path, model: Any, calib: np.ndarray, method: str, threads: int | None,
                        skipped: set[str]) -> dict[str, tuple[float, float]]:
    """Entropy and Percentile need each tensor's histogram: onnxruntime's own calibrators."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    reader = ArrayDataReader(calib, _input_name(model))
    with tempfile.TemporaryDirectory(prefix="ghostedge-calib-") as tmp, optimized_calibration_sessions(threads), \
            _skip_tensors(skipped):
        calibrator = create_calibrator(model_path, None,
                                       augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=getattr(CalibrationMethod, _ORT_METHOD[method]))

        # One batch at a time, merging ranges/histograms as it goes: otherwise the calibrators keep every
        # intermediate tensor of every image in memory (gigabytes for 256 images at 224x224).
        with quiet_onnxruntime():
            for start in range(len(reader)):
                reader.set_range(start, start + 1)
                calibrator.collect_data(reader)
            data = calibrator.compute_data()
    out: dict[str, tuple[float, float]] = {}
    for name, td in data.items():
        lo, hi = td.range_value
        out[name] = (float(np.float32(np.asarray(lo).reshape(-1)[0])), float(np.float32(np.asarray(hi).reshape(-1)[0])))
    return out


def collect_ranges(model_path: Path | str, calib: np.ndarray, method: str = "minmax",
                   threads: int | Callable[[], int] | None = None,
                   use_cache: bool = True, cache_dir: Path | None = None) -> TensorRanges:
    """The range of every tensor of ``model_path`` (FP32 ONNX) over the calibration images ``calib``.

    ``calib`` holds the preprocessed images, (N, 3, H, W) float32. One pass for ``method`` (``minmax``,
    ``entropy`` or ``percentile``); cached unless ``use_cache`` is False. ``threads``: a number, or a
    callable the MinMax pass asks as it goes (see :func:`ghostnet_edge.calib.minmax.collect_minmax`).
    """
    check_method(method)
    ort = require("onnxruntime", "onnxruntime", "INT8 calibration")
    model_path = Path(model_path)
    if calib.ndim != 4 or len(calib) == 0:
        raise ExportError(f"calibration data has shape {tuple(calib.shape)}, expected (N, 3, H, W) with N >= 1",
                          "pass the preprocessed calibration images")
    t0 = time.perf_counter()
    digest = array_digest(calib)
    key = ranges_key(model_path.read_bytes(), calib, method, ort.__version__, digest)
    target = (cache_dir or ranges_cache_dir()) / f"{key}.json"
    if use_cache and target.is_file():
        cached = _load_cached(target, method)
        if cached is not None:
            with contextlib.suppress(OSError):
                os.utime(target)  # recently used: kept by the pruning
            cached.key, cached.cache_hit, cached.seconds = key, True, time.perf_counter() - t0
            cached.calib_sha256 = digest.hex()
            return cached
    try:
        ranges = _collect(model_path, calib, method, threads)
    except GhostEdgeError:
        raise
    except Exception as exc:
        raise ExportError(f"onnxruntime calibration ({method}) failed: {exc}",
                          "try another --calib-method, or --no-int8 to export FP32 only") from exc
    result = TensorRanges(method, ranges, int(len(calib)), key, False, 0.0, calib_sha256=digest.hex())
    if use_cache:
        from ghostnet_edge.calib.cache import prune

        with contextlib.suppress(OSError, GhostEdgeError):  # a read-only or full cache costs speed, never the export
            atomic_write_json(target, result.to_json())
            prune(target.parent, MAX_CACHED, "*.json")
    result.seconds = time.perf_counter() - t0
    return result
