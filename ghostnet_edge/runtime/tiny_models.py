"""Tiny classifiers in every artifact format, with identical weights, built by the real converters.

Used where a small, quick model is the point: the harness-overhead benchmark (our timed loop against
the runtime's bare ``invoke()``) and the runtime tests (one network as FP32 TFLite, INT8 TFLite,
FP32 ONNX and QDQ INT8 ONNX, so the same input must give the same class everywhere).

The network: 3x32x32 input -> 3x3 conv (8 channels, stride 1, pad 1) -> ReLU -> global average
pool -> fully connected to 10 classes. Weights come from a seeded generator.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ghostnet_edge.utils.atomic import atomic_write_bytes, ensure_writable_dir

INPUT_CHW = (3, 32, 32)
NUM_CLASSES = 10
CHANNELS = 8
VERSION = "tiny-v1"
NAMES = ("tiny_fp32.tflite", "tiny_int8.tflite", "tiny_fp32.onnx", "tiny_int8.onnx", "two_inputs.onnx",
         "flat_input.onnx")


def tiny_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """Conv (OIHW) and dense (out, in) weights, scaled so logits are O(1)."""
    rng = np.random.default_rng(seed)
    return {
        "conv_w": (rng.standard_normal((CHANNELS, 3, 3, 3)) * 0.3).astype(np.float32),
        "conv_b": (rng.standard_normal(CHANNELS) * 0.1).astype(np.float32),
        "fc_w": (rng.standard_normal((NUM_CLASSES, CHANNELS)) * 0.5).astype(np.float32),
        "fc_b": (rng.standard_normal(NUM_CLASSES) * 0.1).astype(np.float32),
    }


def reference_logits(x_nchw: np.ndarray, seed: int = 0) -> np.ndarray:
    """The network in NumPy (float64), the ground truth every artifact is compared with."""
    w = tiny_weights(seed)
    x = np.pad(np.asarray(x_nchw, np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    n, _, h, wd = x_nchw.shape
    out = np.zeros((n, CHANNELS, h, wd))
    for i in range(3):
        for j in range(3):
            out += np.einsum("nchw,oc->nohw", x[:, :, i:i + h, j:j + wd], w["conv_w"][:, :, i, j])
    out = np.maximum(out + w["conv_b"][None, :, None, None], 0.0)
    return out.mean(axis=(2, 3)) @ w["fc_w"].T + w["fc_b"]


def onnx_bytes(seed: int = 0) -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = tiny_weights(seed)
    inits = [numpy_helper.from_array(v, k) for k, v in w.items()]
    nodes = [
        helper.make_node("Conv", ["input", "conv_w", "conv_b"], ["c"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                            ["batch", *INPUT_CHW])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", NUM_CLASSES])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="ghostedge-tiny")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def unfeedable_onnx_bytes(kind: str) -> bytes:
    """Models the harness must refuse: two inputs, or a flat (N, 10) input that is not an image."""
    import onnx
    from onnx import TensorProto, helper

    if kind == "two_inputs":
        ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, *INPUT_CHW]) for n in ("a", "b")]
        nodes = [helper.make_node("Add", ["a", "b"], ["y"])]
        out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, *INPUT_CHW])
    else:
        ins = [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 10])]
        nodes = [helper.make_node("Relu", ["a"], ["y"])]
        out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])
    model = helper.make_model(helper.make_graph(nodes, kind, ins, [out]), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def calibration_batch(n: int = 16, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *INPUT_CHW)).astype(np.float32)


def onnx_int8(fp32_path: Path, out_path: Path, seed: int = 1) -> None:
    """QDQ INT8 with onnxruntime's static quantiser, calibrated on seeded noise."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calibration_batch(seed=seed)[:, None])

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.it, None)
            return None if x is None else {"input": x}

    tmp = out_path.with_name(out_path.name + ".partial.onnx")
    try:
        quantize_static(str(fp32_path), str(tmp), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
        atomic_write_bytes(out_path, tmp.read_bytes())
    finally:
        tmp.unlink(missing_ok=True)


def tflite_bytes(seed: int = 0, int8: bool = False) -> bytes:
    """The same network through TensorFlow's converter (NHWC), optionally full-integer INT8."""
    import tensorflow as tf

    w = tiny_weights(seed)
    conv_w = tf.constant(w["conv_w"].transpose(2, 3, 1, 0))   # OIHW -> HWIO
    fc_w = tf.constant(w["fc_w"].T)

    @tf.function(input_signature=[tf.TensorSpec([1, INPUT_CHW[1], INPUT_CHW[2], INPUT_CHW[0]], tf.float32)])
    def net(x: tf.Tensor) -> tf.Tensor:
        y = tf.nn.relu(tf.nn.conv2d(x, conv_w, 1, "SAME") + w["conv_b"])
        return tf.matmul(tf.reduce_mean(y, axis=[1, 2]), fc_w) + w["fc_b"]

    conv = tf.lite.TFLiteConverter.from_concrete_functions([net.get_concrete_function()])
    if int8:
        calib = calibration_batch().transpose(0, 2, 3, 1)

        def rep():  # noqa: ANN202 - generator the converter iterates
            for x in calib:
                yield [x[None]]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = rep
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    return conv.convert()


def build_tiny_models(folder: Path | str, seed: int = 0) -> dict[str, Path]:
    """Write the tiny artifacts into ``folder`` (kept: a second call only returns the paths)."""
    folder = ensure_writable_dir(Path(folder) / VERSION)
    paths = {name: folder / name for name in NAMES}
    if not paths["tiny_fp32.onnx"].exists():
        atomic_write_bytes(paths["tiny_fp32.onnx"], onnx_bytes(seed))
    if not paths["tiny_int8.onnx"].exists():
        onnx_int8(paths["tiny_fp32.onnx"], paths["tiny_int8.onnx"])
    for kind in ("two_inputs", "flat_input"):
        if not paths[f"{kind}.onnx"].exists():
            atomic_write_bytes(paths[f"{kind}.onnx"], unfeedable_onnx_bytes(kind))
    for name, int8 in (("tiny_fp32.tflite", False), ("tiny_int8.tflite", True)):
        if not paths[name].exists():
            atomic_write_bytes(paths[name], tflite_bytes(seed, int8))
    return paths
