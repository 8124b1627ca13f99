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
import json
import platform
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ghostnet_edge.calib.ranges import (  # noqa: F401 - CALIB_METHODS re-exported for the CLI's checks
    CALIB_METHODS,
    ArrayDataReader,
    TensorRanges,
    check_method,
    collect_ranges,
    quiet_onnxruntime,
)
from ghostnet_edge.errors import ExportError, GhostEdgeError, require
from ghostnet_edge.utils.atomic import atomic_write_bytes
from ghostnet_edge.utils.cpu import cpu_flags  # looked up here: patch quantize.cpu_flags to fake a CPU

ACT_TYPES = ("auto", "int8", "uint8")


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


@contextlib.contextmanager
def _precomputed_ranges(ranges: TensorRanges, cache_file: bool | None = None) -> Iterator[dict[str, Any]]:
    """``quantize_static`` keyword arguments that make it use ``ranges`` instead of calibrating.

    onnxruntime 1.2x+ reads precomputed ranges from ``calibration_cache_path`` (a JSON file it writes
    itself with ``save_tensors_data``). Older releases have no such argument; there the calibrator
    factory that ``quantize_static`` calls is replaced, for this call, by one that hands back the
    ranges without running anything. ``cache_file`` forces one way (tests run both).
    """
    import importlib
    import inspect

    # The package re-exports a function named ``quantize`` over its module of that name.
    ort_quantize = importlib.import_module("onnxruntime.quantization.quantize")

    if cache_file is None:
        cache_file = "calibration_cache_path" in inspect.signature(ort_quantize.quantize_static).parameters
    if cache_file:
        from onnxruntime.quantization.calibrate import save_tensors_data

        with tempfile.TemporaryDirectory(prefix="ghostedge-ranges-") as tmp:
            path = Path(tmp) / "ranges.json"
            save_tensors_data(ranges.to_ort(), path)
            yield {"calibration_cache_path": str(path), "calibration_data_reader": None,
                   "calibrate_method": ranges.to_ort().calibration_method}
        return

    class _Given:
        def collect_data(self, _reader: Any) -> None:
            pass

        def compute_data(self) -> Any:
            return ranges.to_ort()

    original = ort_quantize.create_calibrator
    ort_quantize.create_calibrator = lambda *a, **k: _Given()
    try:
        yield {"calibration_data_reader": ArrayDataReader(np.zeros((1, 1, 1, 1), np.float32))}
    finally:
        ort_quantize.create_calibrator = original


def quantize_onnx(fp32_path: Path | str, out_path: Path | str, calib: np.ndarray,
                  method: str = "minmax", activation: ActivationChoice | None = None,
                  per_channel: bool = True, input_name: str = "input",
                  metadata: dict[str, str] | None = None, pre_process: bool = False,
                  work_dir: Path | None = None, threads: int | None = None,
                  ranges: TensorRanges | None = None, cache_file: bool | None = None,
                  precomputed_weights: bool = True, fast_graph_edits: bool = True) -> QuantizeResult:
    """Static QDQ quantization of ``fp32_path`` calibrated on ``calib`` (preprocessed images).

    ``ranges`` are the activation ranges from :func:`ghostnet_edge.calib.ranges.collect_ranges` on the
    same model and images (the export pipeline collects them once for every quantizer); without them
    they are collected here. ``pre_process`` runs onnxruntime's ``quant_pre_process`` (symbolic shape
    inference and graph optimisation) first. It is off by default: on our onnxsim-simplified graphs (BN
    already folded, shapes already inferred) it produced the identical QDQ graph for GhostNet 1.0x and
    cost ~4 s. ``precomputed_weights`` hands onnxruntime the Conv weights' per-channel scales computed at
    once and has it round all channels of a weight at once (:mod:`.weight_params`; the same model, faster);
    off, onnxruntime does both channel by channel. ``fast_graph_edits`` has its initializer look-ups and
    input rewiring done without whole-list scans (:mod:`.graph_edits`; the same model, faster).
    """
    check_method(method)
    onnx = require("onnx", "onnx", "INT8 ONNX quantization")
    require("onnxruntime", "onnxruntime", "INT8 ONNX quantization")
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from ghostnet_edge.export.onnx.convert import canonicalize

    activation = activation or choose_activation_type("auto")
    out_path = Path(out_path)
    work = Path(work_dir) if work_dir is not None else out_path.parent
    source = Path(fp32_path)
    if ranges is None:
        ranges = collect_ranges(source, calib, method, threads)
    elif ranges.method != method:
        raise ExportError(f"the ranges were collected with {ranges.method}, not {method}",
                          "collect them again with the same calibration method")
    pre_path = work / ".model_preprocessed.onnx"
    tmp_out = work / ".model_int8_raw.onnx"
    try:
        if pre_process:
            from onnxruntime.quantization.shape_inference import quant_pre_process

            quant_pre_process(str(source), str(pre_path), skip_symbolic_shape=False)
            source = pre_path
        from ghostnet_edge.export.onnx.graph_edits import linear_graph_edits
        from ghostnet_edge.export.onnx.weight_params import conv_weight_overrides, vectorized_weight_rounding

        extra: dict[str, Any] = {"WeightSymmetric": True}
        if per_channel and precomputed_weights:
            extra["TensorQuantOverrides"] = conv_weight_overrides(onnx.load(str(source)), activation.reduce_range)
        rounding = vectorized_weight_rounding() if precomputed_weights else contextlib.nullcontext()
        edits = linear_graph_edits() if fast_graph_edits else contextlib.nullcontext()
        with quiet_onnxruntime(), _precomputed_ranges(ranges, cache_file) as given, rounding, edits:
            quantize_static(
                str(source), str(tmp_out), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                reduce_range=activation.reduce_range,
                activation_type=QuantType.QUInt8 if activation.dtype == "uint8" else QuantType.QInt8,
                weight_type=QuantType.QInt8, extra_options=extra, **given,
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
