"""Per-channel INT8 weight scales of every Conv, computed at once, handed to onnxruntime's quantizer.

onnxruntime's ``quantize_static`` computes a per-channel weight's scale in Python one channel at a time
(GhostNet 1.0x: 18,188 channels; the export's ``onnx_quantize`` stage took 2.8-3.6 s with that loop
and 1.4-1.8 s without, in ``benchmarks/export_time.py`` on the project's AMD EPYC,
docs/results/export_time_amd.md). It also accepts precomputed
scales and zero points per tensor (``extra_options["TensorQuantOverrides"]``) and then skips that loop.
:func:`conv_weight_overrides` computes them with the same formula, vectorised over channels, so the
quantized model is byte for byte the one onnxruntime makes on its own (``tests/test_onnx_weight_params.py``):

* symmetric: ``absmax = max(|min(w_c, 0)|, |max(w_c, 0)|)`` per output channel ``c``;
* ``scale = float32(float64(2 * absmax) / float64(qmax - qmin))`` with ``[qmin, qmax]`` = [-127, 127],
  or [-64, 64] with ``reduce_range`` (7-bit weights);
* zero point 0; a scale below float32's smallest normal becomes 1.0.

Only 4-D Conv weights (per-channel axis 0, the axis onnxruntime uses for Conv) are given; everything
else (Gemm and MatMul weights, biases, activations) is left to onnxruntime.

The quantizer then rounds the weights to integers one channel at a time as well (``quantize_nparray`` per
channel, the same 18,188 calls): :func:`vectorized_weight_rounding` has it round all channels of a tensor
in one NumPy expression of the same float32 operations (``tests/test_onnx_weight_params.py`` compares
the models byte for byte). onnxruntime's ``quantize_static`` of GhostNet 1.0x: 1.25 s before, 0.92 s with
it (``benchmarks/export_parts.py`` on the project's AMD EPYC, ``docs/results/export_parts_amd.md``).
"""

from __future__ import annotations

import contextlib
import inspect
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from ghostnet_edge.utils.patching import swapped


def symmetric_int8_scales(weight: np.ndarray, reduce_range: bool = False) -> np.ndarray:
    """float32 scale per output channel (axis 0) of ``weight``, as onnxruntime computes it."""
    qmin, qmax = (-64, 64) if reduce_range else (-127, 127)
    flat = weight.reshape(weight.shape[0], -1)
    lo = np.minimum(flat.min(axis=1), np.float32(0))
    hi = np.maximum(flat.max(axis=1), np.float32(0))
    absmax = np.maximum(np.abs(lo), np.abs(hi))
    scale64 = (absmax.astype(np.float64) - (-absmax).astype(np.float64)) / np.float64(qmax - qmin)
    scale = scale64.astype(weight.dtype)
    return np.where(scale64 < np.finfo(weight.dtype).tiny, np.asarray(1.0, weight.dtype), scale)


def conv_weight_overrides(model: Any, reduce_range: bool = False) -> dict[str, list[dict[str, Any]]]:
    """``TensorQuantOverrides`` for the float32 4-D weight of every Conv of ``model`` (an ONNX ModelProto)."""
    from onnx import TensorProto, numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    out: dict[str, list[dict[str, Any]]] = {}
    for node in model.graph.node:
        if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in inits or node.input[1] in out:
            continue
        init = inits[node.input[1]]
        if init.data_type != TensorProto.FLOAT or len(init.dims) != 4:
            continue
        scales = symmetric_int8_scales(numpy_helper.to_array(init), reduce_range)
        out[init.name] = [{"scale": float(s), "zero_point": 0, **({"axis": 0} if i == 0 else {})}
                          for i, s in enumerate(scales)]
    return out


# The arguments of onnxruntime's quantize_onnx_initializer this replacement was written against; another
# onnxruntime whose function takes others keeps its own.
_ROUNDING_PARAMS = ("weight", "quant_type", "zero_point", "scale", "axis", "quant_weight_name", "block_size")
_PATCH_LOCK = threading.Lock()


def round_per_channel(weight: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int, qmin: int,
                      qmax: int, dtype: Any) -> np.ndarray:
    """``clip(round(w / scale_c) + zero_point_c, qmin, qmax)`` along ``axis``, in float32 like onnxruntime's
    ``quantize_nparray`` applied channel by channel, then cast to ``dtype``."""
    shape = [1] * weight.ndim
    shape[axis] = -1
    q = (weight.astype(np.float32) / np.asarray(scale).reshape(shape)).round() + np.asarray(zero_point).reshape(shape)
    np.clip(q, qmin, qmax, out=q)
    return q.astype(dtype)


@contextlib.contextmanager
def vectorized_weight_rounding() -> Iterator[bool]:
    """While active, onnxruntime's QDQ quantizer rounds 8-bit per-channel weights with
    :func:`round_per_channel`; every other case (per-tensor, blocks, other types) stays its own. Yields
    whether the replacement is in place (an onnxruntime with another function signature keeps its own)."""
    from onnxruntime.quantization import qdq_quantizer, quant_utils

    original = getattr(qdq_quantizer, "quantize_onnx_initializer", None)
    if original is None or tuple(inspect.signature(original).parameters) != _ROUNDING_PARAMS:
        yield False
        return
    from onnx import TensorProto, numpy_helper

    def rounded(weight: Any, quant_type: int, zero_point: np.ndarray, scale: np.ndarray, axis: int | None = None,
                quant_weight_name: str | None = None, block_size: int = 0) -> Any:
        if axis is None or block_size or quant_type not in (TensorProto.INT8, TensorProto.UINT8):
            return original(weight, quant_type, zero_point, scale, axis, quant_weight_name, block_size)
        qmin, qmax = quant_utils.get_qmin_qmax_for_qType(quant_type, reduce_range=False, symmetric=False)
        q = round_per_channel(quant_utils.tensor_proto_to_array(weight), scale, zero_point, axis, qmin, qmax,
                              quant_utils.ONNX_TYPE_TO_NP_TYPE[quant_type])
        return numpy_helper.from_array(q, quant_weight_name or f"{weight.name}{quant_utils.TENSOR_NAME_QUANT_SUFFIX}")

    with _PATCH_LOCK, swapped((qdq_quantizer, "quantize_onnx_initializer", rounded)):
        yield True
