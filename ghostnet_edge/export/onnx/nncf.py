"""Accuracy-aware INT8: ``nncf.quantize_with_accuracy_control`` on the FP32 ONNX model.

Used instead of onnxruntime's plain static quantization when labelled validation images and a maximum
top-1 drop are given: NNCF quantizes, measures the drop on the validation set, and if it exceeds
``max_drop`` it ranks layers by their contribution and reverts the worst ones to float until the drop
fits (or it runs out of iterations, which we then report as a failed check). The result is a QDQ ONNX
model like onnxruntime's, so the same verification and per-layer report apply.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ghostnet_edge.errors import ExportError, GhostEdgeError, require
from ghostnet_edge.export.onnx.quantize import ActivationChoice
from ghostnet_edge.utils.atomic import atomic_write_bytes


@dataclass(frozen=True)
class NncfResult:
    path: Path
    activation: ActivationChoice
    per_channel: bool
    num_calib: int
    max_drop: float
    num_qdq_nodes: int
    float_nodes: list[str]  # Conv/Gemm nodes whose weights NNCF left in float (reverted to meet max_drop)


@contextlib.contextmanager
def _protobuf_enum_union_shim() -> Iterator[None]:
    """Work around NNCF 3.4's ONNX backend failing to import with protobuf 4.x.

    ``nncf/onnx/quantization/quantizer_parameters.py`` annotates a dataclass field as
    ``onnx.TensorProto.DataType | np.dtype``; the annotation is evaluated at import, and protobuf 4.25's
    ``EnumTypeWrapper`` (what ``DataType`` is) has no ``__or__``, so the import raises ``TypeError``.
    While NNCF runs, the wrapper class gets an ``__or__`` that returns ``typing.Any`` (the annotation is
    never used for anything else); it is removed again afterwards. A no-op where protobuf supports it.
    """
    import typing

    from google.protobuf.internal import enum_type_wrapper as etw

    added = "__or__" not in vars(etw.EnumTypeWrapper)
    if added:
        etw.EnumTypeWrapper.__or__ = lambda self, other: typing.Any  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if added:
            del etw.EnumTypeWrapper.__or__


def _batches(x: np.ndarray, input_name: str) -> list[dict[str, np.ndarray]]:
    # NNCF's ONNX backend feeds one item per call; batch 1 matches its statistics collection.
    return [{input_name: np.ascontiguousarray(x[i:i + 1], dtype=np.float32)} for i in range(len(x))]


def quantize_with_accuracy_control(fp32_path: Path | str, out_path: Path | str, calib: np.ndarray,
                                   val_x: np.ndarray, val_y: np.ndarray, max_drop: float = 0.01,
                                   activation: ActivationChoice | None = None, per_channel: bool = True,
                                   input_name: str = "input", metadata: dict[str, str] | None = None,
                                   threads: int = 1) -> NncfResult:
    """Quantize ``fp32_path`` so that top-1 accuracy on (``val_x``, ``val_y``) drops by at most ``max_drop``."""
    if not 0.0 <= max_drop < 1.0:
        raise GhostEdgeError(f"--max-drop must be in [0, 1), got {max_drop}", "e.g. --max-drop 0.01 (one point)")
    if len(val_x) == 0 or len(val_x) != len(val_y):
        raise GhostEdgeError("accuracy-aware quantization needs labelled validation images",
                             "pass --val-data with class sub-folders named like the model's classes")
    onnx = require("onnx", "onnx", "accuracy-aware INT8 quantization")
    ort = require("onnxruntime", "onnxruntime", "accuracy-aware INT8 quantization")
    nncf = require("nncf", "nncf", "accuracy-aware INT8 quantization (--max-drop with --val-data)")
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, QuantizationParameters

    from ghostnet_edge.export.onnx.convert import canonicalize

    logging.getLogger("nncf").setLevel(logging.ERROR)
    model = onnx.load(str(fp32_path))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3

    def validate(m: Any, data: Any) -> float:
        sess = ort.InferenceSession(m.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
        correct = [int(np.argmax(sess.run(None, {input_name: x})[0], axis=1)[0] == y) for x, y in data]
        return float(np.mean(correct)) if correct else 0.0

    val_items = [(np.ascontiguousarray(val_x[i:i + 1], dtype=np.float32), int(val_y[i])) for i in range(len(val_x))]
    advanced = AdvancedQuantizationParameters(
        weights_quantization_params=None if per_channel else QuantizationParameters(per_channel=False))
    # MIXED = asymmetric (uint8-style) activations, x86's fast path; PERFORMANCE = symmetric int8 (ARM).
    preset = nncf.QuantizationPreset.MIXED if (activation is None or activation.dtype == "uint8") \
        else nncf.QuantizationPreset.PERFORMANCE
    try:
        with _protobuf_enum_union_shim(), contextlib.redirect_stdout(io.StringIO()):
            quantized = nncf.quantize_with_accuracy_control(
                model, calibration_dataset=nncf.Dataset(_batches(calib, input_name)),
                validation_dataset=nncf.Dataset(val_items), validation_fn=validate, max_drop=max_drop,
                preset=preset, subset_size=len(calib), advanced_quantization_parameters=advanced)
    except GhostEdgeError:
        raise
    except Exception as exc:  # NNCF raises its own and numpy/onnx errors
        raise ExportError(f"NNCF accuracy-aware quantization failed: {exc}",
                          "try without --max-drop (onnxruntime static quantization)") from exc
    qdq_outputs = {o for n in quantized.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    # A Conv/Gemm whose weights do not come through a DequantizeLinear runs in float: NNCF's
    # accuracy restorer reverted it (or never quantized it).
    float_nodes = sorted(n.name for n in quantized.graph.node
                         if n.op_type in ("Conv", "Gemm", "MatMul") and len(n.input) > 1
                         and n.input[1] not in qdq_outputs)
    meta = dict(metadata or {})
    meta["ghostedge.quantization"] = json.dumps(
        {"format": "QDQ", "tool": "nncf.quantize_with_accuracy_control", "max_drop": max_drop,
         "weights": "int8 " + ("per-channel" if per_channel else "per-tensor"), "preset": preset.value,
         "num_calib": int(len(calib)), "float_nodes": float_nodes}, sort_keys=True)
    quantized = canonicalize(quantized, meta)
    atomic_write_bytes(out_path, quantized.SerializeToString())
    act = activation or ActivationChoice("uint8", False, "x86_64", "")
    act = ActivationChoice(act.dtype, False, act.target,
                           f"NNCF preset {preset.value}: " + ("asymmetric (u8) activations" if preset.value == "mixed"
                                                             else "symmetric (s8) activations"))
    n_qdq = sum(1 for n in quantized.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear"))
    return NncfResult(Path(out_path), act, per_channel, int(len(calib)), max_drop, n_qdq, float_nodes)
