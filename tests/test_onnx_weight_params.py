"""Precomputed Conv weight scales and all-channel rounding (export/onnx/weight_params.py) give onnxruntime's own INT8
model, byte for byte."""

from __future__ import annotations

import numpy as np
import pytest

from ghostnet_edge.export.onnx import weight_params as wp


def test_scales_match_onnxruntimes_channel_by_channel_formula() -> None:
    from onnx import TensorProto
    from onnxruntime.quantization.quant_utils import compute_data_quant_params

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((7, 3, 3, 3)) * rng.uniform(1e-3, 3, (7, 1, 1, 1))).astype(np.float32)
    w[1] = 0.0                # an all-zero channel: scale 1.0, as onnxruntime gives it
    w[2] = np.abs(w[2])       # one-sided channels: the range still includes 0
    w[3] = -np.abs(w[3])
    w[4] *= np.float32(1e-39)  # below float32's smallest normal
    for reduce_range in (False, True):
        got = wp.symmetric_int8_scales(w, reduce_range)
        for c in range(len(w)):
            zp, scale = compute_data_quant_params(w[c].ravel(), TensorProto.INT8, True, reduce_range=reduce_range)
            assert zp == 0 and got[c].dtype == scale.dtype and got[c] == scale, (reduce_range, c)


@pytest.mark.parametrize("name", ["ghostnet_cifar_050", "mobilenetv3_large_cifar_100"])
def test_quantized_model_is_byte_identical(name: str, quantized_both_ways) -> None:
    from ghostnet_edge.export.onnx.quantize import choose_activation_type

    for act in ("int8", "uint8-reduced"):
        choice = choose_activation_type("int8" if act == "int8" else "auto", machine="x86_64", flags=set())
        assert choice.reduce_range == (act != "int8")
        before, now = quantized_both_ways(name, "precomputed_weights", choice)
        assert before == now, act


def test_rounding_all_channels_at_once_matches_onnxruntimes_per_channel_rounding() -> None:
    from onnx import TensorProto
    from onnxruntime.quantization.quant_utils import get_qmin_qmax_for_qType, quantize_nparray

    rng = np.random.default_rng(2)
    w = (rng.standard_normal((6, 4, 3, 3)) * 3).astype(np.float32)
    scale = rng.uniform(0.01, 0.05, 6).astype(np.float32)
    w[0] = (np.arange(36, dtype=np.float32).reshape(4, 3, 3) - 17.5) * scale[0]  # halves: round half to even
    w[1] *= 100  # far outside the range: clipped
    for qtype, dtype in ((TensorProto.INT8, np.int8), (TensorProto.UINT8, np.uint8)):
        zp = (np.zeros(6) if qtype == TensorProto.INT8 else rng.integers(0, 255, 6)).astype(dtype)
        qmin, qmax = get_qmin_qmax_for_qType(qtype, reduce_range=False, symmetric=False)
        for axis in (0, 1):
            n = w.shape[axis]
            got = wp.round_per_channel(w, scale[:n], zp[:n], axis, qmin, qmax, dtype)
            want = np.stack([quantize_nparray(qtype, w.take(c, axis).ravel(), scale[c], zp[c]).reshape(
                w.take(c, axis).shape) for c in range(n)], axis)
            assert got.dtype == want.dtype and np.array_equal(got, want), (qtype, axis)


def test_vectorized_rounding_is_undone_after_quantizing() -> None:
    from onnxruntime.quantization import qdq_quantizer

    original = qdq_quantizer.quantize_onnx_initializer
    with wp.vectorized_weight_rounding() as active:
        assert active  # the onnxruntime this project pins: the replacement applies
        assert qdq_quantizer.quantize_onnx_initializer is not original
    assert qdq_quantizer.quantize_onnx_initializer is original
    with pytest.raises(RuntimeError), wp.vectorized_weight_rounding():
        raise RuntimeError("a failed quantization")
    assert qdq_quantizer.quantize_onnx_initializer is original
