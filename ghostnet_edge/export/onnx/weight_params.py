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
"""

from __future__ import annotations

from typing import Any

import numpy as np


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
