"""PyTorch -> ONNX FP32 (``convert``), INT8 QDQ (``quantize``, ``nncf``), checks (``verify``).

Submodules import onnx/onnxruntime inside their functions; importing this package is cheap.
"""

from ghostnet_edge.export.onnx.config import OnnxExportConfig

__all__ = ["OnnxExportConfig"]
