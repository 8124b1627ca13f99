"""In-process inference for evaluation: ``load_runner(artifact) -> Runner``.

``Runner.run(nchw_float_batch) -> float logits`` hides the runtime's layout (NHWC for TFLite), its
integer input/output (quantised and dequantised with the model's own scale and zero point) and its
fixed batch (looped). The TFLite and ONNX code is the device runner's (``device_runner.Model``), so
evaluation and latency measurement feed models the same way; PyTorch uses ``torch_runner``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ghostnet_edge.errors import GhostEdgeError, MissingDependencyError
from ghostnet_edge.runtime import device_runner as dr

BACKENDS = ("auto", "litert", "tflite-runtime", "onnxruntime", "torch")
# pip package -> module, for MissingDependencyError
_MODULES = {"numpy": "numpy", "ai-edge-litert": "ai_edge_litert", "tflite-runtime": "tflite_runtime",
            "onnxruntime": "onnxruntime"}


@dataclass
class Runner:
    """A loaded artifact ready for batches of preprocessed images."""

    model: dr.Model
    artifact: str

    @property
    def input_size(self) -> tuple[int, int, int]:
        """(C, H, W) the model takes."""
        return tuple(int(v) for v in self.model.chw_shape())  # type: ignore[return-value]

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Float32 logits for a float32 NCHW batch (any batch size)."""
        try:
            return np.asarray(self.model.run(batch), dtype=np.float32)
        except dr.RunnerError as exc:
            raise _as_ghostedge_error(exc) from exc

    def info(self) -> dict[str, Any]:
        m = self.model
        return {"runtime": m.runtime, "version": m.version, "delegate": m.delegate,
                "threads": getattr(m, "threads", None), "input_shape": list(m.input_shape),
                "input_dtype": m.input_dtype, "layout": m.layout}


def _as_ghostedge_error(exc: dr.RunnerError) -> GhostEdgeError:
    if exc.package:
        return MissingDependencyError(_MODULES.get(exc.package, exc.package), exc.package, "running this artifact")
    return GhostEdgeError(exc.message, exc.hint or None)


def load_runner(artifact: str | Path, runtime: str = "auto", threads: int = 1, xnnpack: bool = True) -> Runner:
    """Open ``artifact`` (.tflite, .onnx, checkpoint or model name) with ``runtime``.

    A runtime that is not installed raises MissingDependencyError naming the pip package.
    """
    if runtime not in BACKENDS:
        raise GhostEdgeError(f"unknown runtime {runtime!r}", f"choose from: {', '.join(BACKENDS)}")
    from ghostnet_edge.runtime.artifacts import inspect_artifact

    info = inspect_artifact(artifact)
    try:
        if info.format == "torch":
            from ghostnet_edge.runtime.torch_runner import load_torch

            model: dr.Model = load_torch(info.spec, runtime, threads, xnnpack)
        else:
            if runtime == "torch":
                raise GhostEdgeError(f"runtime torch cannot run {info.format} artifacts",
                                     "use --runtime auto")
            model = dr.load_model(str(info.path), runtime, threads, xnnpack)
    except dr.RunnerError as exc:
        raise _as_ghostedge_error(exc) from exc
    model.threads = threads
    return Runner(model=model, artifact=str(artifact))
