"""The TFLite route: ONNX -> our own ONNX-to-TensorFlow translator -> ``tf.lite.TFLiteConverter``.

Route decision (quoted by the README)
-------------------------------------
A probe compared three ways from PyTorch to a fully integer TFLite GhostNet:

* PyTorch -> ONNX -> onnx2tf 1.29.24 -> SavedModel -> ``TFLiteConverter`` with our own representative
  data gave a fully INT8 graph (175 ops, no QUANTIZE/DEQUANTIZE inside), 2.81 ms vs 4.94 ms FP32 in
  ai-edge-litert with 1 thread. But onnx2tf shells out to an ``onnxsim`` executable (it must be on
  PATH), tries to download a sample calibration file even when given calibration data (fails
  offline), turned the 5 shortcut depthwise convolutions into grouped CONV_2D, and took 54-59 s.
* litert-torch 0.10 (PyTorch -> TFLite without TensorFlow) converted FP32 correctly, but its PT2E INT8
  graph kept float islands: 22 of 23 residual ADDs in float, 33 QUANTIZE and 27 DEQUANTIZE mid-graph.
* tflite-runtime 2.14 needs numpy < 2 and its XNNPACK does not take the INT8 graph (54 ms instead of
  2.8 ms); its successor ai-edge-litert does.

We chose the route with the fewest moving parts that meets every requirement: the ONNX file the ONNX
stage already writes and verifies is translated by ``translate.py`` (about 600 lines, the op set of
GhostNet/MobileNet/ResNet/VGG) into a TensorFlow function laid out NHWC from the input on, and
``tf.lite.TFLiteConverter`` turns it into FP32 and full-integer INT8 models with our own calibration
tensors. Each ONNX op becomes the TF op the converter maps best: a depthwise conv is always
``tf.nn.depthwise_conv2d`` -> DEPTHWISE_CONV_2D, hard-swish becomes one HARD_SWISH for ARM (or, for
x86, a 1x1 depthwise conv and a MUL that XNNPACK runs in INT8), the SE gate is
CONV_2D(+RELU6) and MUL in INT8. It needs no network, no external executables and converts GhostNet
in seconds. onnx2tf stays as the second route: the tests convert the same ONNX with it (onnx2tf 2.x, run
offline in a cached tool venv on Python >= 3.12, see ``crosscheck``) and check that both FP32 models agree. Artifacts run in ai-edge-litert by default; tflite-runtime is used where it is
the only interpreter installed.

Modules: ``translate`` (ONNX -> TF), ``convert`` (TF -> .tflite FP32/INT8, deterministic bytes),
``metadata`` (signature + labels/preprocessing embedded in the flatbuffer), ``inspect`` (ops, types,
fully-integer check), ``ranges`` (calibration ranges placed on the flatbuffer), ``worker`` (the
converter in a process of its own), ``layers`` (per-layer SQNR of the INT8 model). Artifacts are run
by the one artifact runner, ``ghostnet_edge.runtime.backends``, and checked by ``export/checks.py``.
"""

from __future__ import annotations

__all__ = [
    "TfliteResult",
    "assert_fully_integer",
    "convert_onnx_to_tflite",
    "onnx_to_tf_function",
    "read_embedded_metadata",
    "tflite_ops",
]


def __getattr__(name: str):
    # Lazy re-exports: importing the package must not import TensorFlow.
    import importlib

    where = {
        "TfliteResult": "convert", "convert_onnx_to_tflite": "convert",
        "onnx_to_tf_function": "translate", "read_embedded_metadata": "metadata",
        "tflite_ops": "inspect", "assert_fully_integer": "inspect",
    }
    if name in where:
        return getattr(importlib.import_module(f"{__name__}.{where[name]}"), name)
    raise AttributeError(name)
