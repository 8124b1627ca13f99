"""Export: ONNX and TFLite, FP32 and INT8, each artifact verified against PyTorch before it is written.

``export_artifacts(ExportConfig) -> ExportReport`` (in :mod:`ghostnet_edge.export.pipeline`) runs the
whole job. They are re-exported lazily so that importing ``ghostnet_edge.export.tflite`` (or this
package) does not pull in torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ExportConfig", "ExportReport", "export_artifacts"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from ghostnet_edge.export import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
