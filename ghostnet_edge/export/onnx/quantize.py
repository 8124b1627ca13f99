"""FP32 ONNX -> INT8 QDQ ONNX with onnxruntime static quantization.

Weights are int8, symmetric, per output channel (per-tensor on request). The activation type is the
one choice that depends on where the model will run:

* x86-64 hosts: **uint8** activations. VNNI's ``VPDPBUSD`` (and AVX2's ``VPMADDUBSW``) multiply an
  unsigned byte by a signed byte, so onnxruntime's x86 kernels run u8 activations x s8 weights
  directly; s8 x s8 needs extra work. Measured for GhostNet 1.0x on an AVX512-VNNI host, 1 thread:
  FP32 5.59 ms, QDQ s8 activations 12.44 ms (slower than FP32), QDQ u8 activations 5.24 ms.
  Without VNNI the u8 x s8 path can saturate 16-bit intermediate sums, so weights use the 7-bit
  ``reduce_range`` there, as onnxruntime's documentation recommends for AVX2/AVX512 without VNNI.
* ARM (aarch64/armv7): **int8** activations. ``SDOT``/``SMMLA`` multiply s8 x s8, and int8 is what
  TFLite/XNNPACK and NNAPI expect, so the same ranges carry over to the TFLite model.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import platform
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ghostnet_edge.errors import ExportError, GhostEdgeError, require
from ghostnet_edge.utils.atomic import atomic_write_bytes
from ghostnet_edge.utils.cpu import cpu_flags  # looked up here: patch quantize.cpu_flags to fake a CPU

CALIB_METHODS = ("minmax", "entropy", "percentile")
ACT_TYPES = ("auto", "int8", "uint8")
_ORT_METHOD = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
# Batches larger than one make calibration several times faster; the MinMax/histogram collectors
# reduce over the batch axis, so the ranges are the same as feeding images one at a time.
CALIB_BATCH = 16


@dataclass(frozen=True)
class ActivationChoice:
    """The activation dtype for a target, and why (recorded in the manifest)."""

    dtype: str            # "uint8" | "int8"
    reduce_range: bool    # 7-bit weights (x86 without VNNI only)
    target: str           # "x86_64" | "arm" | ...
    reason: str


@dataclass(frozen=True)
class QuantizeResult:
    path: Path
    activation: ActivationChoice
    calib_method: str
    per_channel: bool
    num_calib: int
    num_qdq_nodes: int
    pre_processed: bool


def normalize_machine(machine: str) -> str:
    m = machine.lower()
    if m in ("x86_64", "amd64", "x64", "i686", "i386"):
        return "x86_64"
    if m.startswith(("aarch64", "arm64", "armv8", "armv7", "arm")):
        return "arm"
    return m


def choose_activation_type(requested: str = "auto", machine: str | None = None,
                           flags: set[str] | frozenset[str] | None = None) -> ActivationChoice:
    """Pick uint8 or int8 activations for ``machine`` (default: this host); see the module docstring."""
    if requested not in ACT_TYPES:
        raise GhostEdgeError(f"unknown activation type {requested!r}",
                             f"choose one of: {', '.join(ACT_TYPES)}")
    target = normalize_machine(machine or platform.machine())
    flags = cpu_flags() if flags is None and machine is None else (flags or set())
    vnni = bool({"avx512_vnni", "avx_vnni", "avx512vnni"} & flags)
    if requested != "auto":
        return ActivationChoice(
            requested, False, target,
            f"--act-type {requested} requested" + (
                "; on x86 uint8 activations run faster in onnxruntime (u8 x s8 VNNI dot products)"
                if requested == "int8" and target == "x86_64" else ""))
    if target == "x86_64":
        if vnni:
            return ActivationChoice("uint8", False, target,
                                    "x86-64 with VNNI: VPDPBUSD multiplies u8 activations by s8 weights, "
                                    "so onnxruntime runs U8S8 QDQ fastest (s8 activations were measured "
                                    "2.4x slower, slower than FP32)")
        return ActivationChoice("uint8", True, target,
                                "x86-64 without VNNI: u8 activations x s8 weights (VPMADDUBSW) with 7-bit "
                                "weights (reduce_range) to avoid 16-bit saturation, as onnxruntime recommends")
    if target == "arm":
        return ActivationChoice("int8", False, target,
                                "ARM: SDOT/SMMLA multiply s8 x s8, and int8 activations match TFLite/XNNPACK")
    return ActivationChoice("uint8", False, target,
                            f"unknown CPU {target!r}: uint8 activations, onnxruntime's default for CPUs")


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
        """Restrict to batches ``[start_index, end_index)`` (onnxruntime's strided calibration)."""
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
def _quiet() -> Iterator[None]:
    """Hide onnxruntime's calibration prints and its root-logger advice (we already follow it)."""
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(logging.NOTSET)


@contextlib.contextmanager
def _optimized_calibration_sessions(threads: int | None) -> Iterator[None]:
    """Let onnxruntime's calibrators run their augmented model with graph optimisations on.

    ``CalibraterBase.create_inference_session`` hard-codes ``ORT_DISABLE_ALL``, which keeps onnxruntime
    from using its blocked (NCHWc) convolution kernels: calibrating GhostNet 1.0x at 224 on 64 images
    took 18.3 s that way and 11.0 s with ``ORT_ENABLE_ALL``, with every tensor range equal to 1e-6
    (the optimisations do not touch the tensors the calibrator reads: they are graph outputs). There is
    no option for this in ``quantize_static``, so the method is swapped for the duration of one call.
    """
    import onnxruntime
    from onnxruntime.quantization import calibrate

    original = getattr(calibrate.CalibraterBase, "create_inference_session", None)
    if original is None:  # another onnxruntime layout: leave it alone (slower, same ranges)
        yield
        return

    def create_inference_session(self: Any) -> None:
        opts = onnxruntime.SessionOptions()
        opts.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        self.infer_session = onnxruntime.InferenceSession(
            self.augmented_model_path, sess_options=opts, providers=self.execution_providers)

    calibrate.CalibraterBase.create_inference_session = create_inference_session
    try:
        yield
    finally:
        calibrate.CalibraterBase.create_inference_session = original


def quantize_onnx(fp32_path: Path | str, out_path: Path | str, calib: np.ndarray,
                  method: str = "minmax", activation: ActivationChoice | None = None,
                  per_channel: bool = True, input_name: str = "input",
                  metadata: dict[str, str] | None = None, pre_process: bool = False,
                  work_dir: Path | None = None, threads: int | None = None) -> QuantizeResult:
    """Static QDQ quantization of ``fp32_path`` calibrated on ``calib`` (preprocessed images).

    ``pre_process`` runs onnxruntime's ``quant_pre_process`` (symbolic shape inference and graph
    optimisation) first. It is off by default: on our onnxsim-simplified graphs (BN already folded,
    shapes already inferred) it produced the identical QDQ graph for GhostNet 1.0x and cost ~4 s.
    """
    if method not in CALIB_METHODS:
        raise GhostEdgeError(f"unknown calibration method {method!r}",
                             f"choose one of: {', '.join(CALIB_METHODS)}")
    onnx = require("onnx", "onnx", "INT8 ONNX quantization")
    require("onnxruntime", "onnxruntime", "INT8 ONNX quantization")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from ghostnet_edge.export.onnx.convert import canonicalize

    activation = activation or choose_activation_type("auto")
    out_path = Path(out_path)
    work = Path(work_dir) if work_dir is not None else out_path.parent
    source = Path(fp32_path)
    pre_path = work / ".model_preprocessed.onnx"
    tmp_out = work / ".model_int8_raw.onnx"
    try:
        if pre_process:
            from onnxruntime.quantization.shape_inference import quant_pre_process

            quant_pre_process(str(source), str(pre_path), skip_symbolic_shape=False)
            source = pre_path
        # "CalibStridedMinMax" (despite its name honoured by every calibrator) makes onnxruntime
        # collect one batch at a time and merge ranges/histograms as it goes. Without it the
        # calibrators keep every intermediate tensor of every image in memory (gigabytes for 256
        # images at 224x224), and the histogram ones fail on a last batch of a different size.
        extra: dict[str, Any] = {"WeightSymmetric": True, "CalibStridedMinMax": 1}
        with _quiet(), _optimized_calibration_sessions(threads):
            quantize_static(
                str(source), str(tmp_out), ArrayDataReader(calib, input_name),
                quant_format=QuantFormat.QDQ, per_channel=per_channel, reduce_range=activation.reduce_range,
                activation_type=QuantType.QUInt8 if activation.dtype == "uint8" else QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=getattr(CalibrationMethod, _ORT_METHOD[method]),
                extra_options=extra,
            )
        proto = onnx.load(str(tmp_out))
    except GhostEdgeError:
        raise
    except Exception as exc:
        raise ExportError(f"onnxruntime static quantization failed: {exc}",
                          "try another --calib-method, or --no-int8 to export FP32 only") from exc
    finally:
        for p in (pre_path, tmp_out):
            p.unlink(missing_ok=True)
    meta = dict(metadata or {})
    meta["ghostedge.quantization"] = json.dumps(
        {"format": "QDQ", "weights": "int8 symmetric " + ("per-channel" if per_channel else "per-tensor"),
         "activations": activation.dtype, "calibration": method, "num_calib": int(len(calib))},
        sort_keys=True)
    proto = canonicalize(proto, meta)
    atomic_write_bytes(out_path, proto.SerializeToString())
    n_qdq = sum(1 for n in proto.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear"))
    return QuantizeResult(path=out_path, activation=activation, calib_method=method,
                          per_channel=per_channel, num_calib=int(len(calib)), num_qdq_nodes=n_qdq,
                          pre_processed=pre_process)


def activation_choice_dict(choice: ActivationChoice) -> dict[str, Any]:
    return asdict(choice)
